/* Linux calls that Swift cannot reach through Glibc: they need _GNU_SOURCE,
 * have no glibc wrapper, or take kernel structs. Each is a thin pass-through
 * (clinux.c); errno is left for the Swift platform layer to read. */
#ifndef LOGINCHROOT_CLINUX_H
#define LOGINCHROOT_CLINUX_H

#include <sys/types.h>

extern const int LC_CLONE_NEWNS;
extern const int LC_CLONE_FS;
extern const unsigned long long LC_RESOLVE_IN_ROOT;
extern const unsigned long long LC_RESOLVE_NO_MAGICLINKS;
extern const unsigned long long LC_RESOLVE_NO_SYMLINKS;
extern const int LC_O_PATH;

int lc_make_readonly(const char *path, int recursive);
/* Sets nodev and noatime (and nosuid when asked) on the mount at `path`. */
int lc_harden_mount(const char *path, int nosuid);
/* pidfd_open(2) and pidfd_send_signal(2) with SIGKILL: a kill that reaches
 * the process the fd was opened for, or nobody, never a reused pid. */
int lc_pidfd_open(pid_t pid);
/* An unnamed in-memory file (close-on-exec), for a program's output. */
int lc_memfd(const char *name);
int lc_pidfd_kill(int pidfd);
/* getresuid(2), and setresuid(2) of the real uid alone. */
int lc_getresuid(uid_t *real, uid_t *effective, uid_t *saved);
int lc_set_real_uid(uid_t real);
int lc_unshare(int flags);
int lc_setns(int fd, int nstype);
int lc_pivot_root(const char *new_root, const char *put_old);

/* The CPUs the calling thread may run on (at most `max` of them, in
 * `cpus`); returns how many, or -1. */
int lc_thread_cpus(int *cpus, int max);
/* Restricts the calling thread to the `count` CPUs in `cpus`. */
int lc_set_thread_cpus(const int *cpus, int count);

/* 1 if `path` (not followed if a symlink) is the root of a mount, 0 if not,
 * -1 with errno set on error, or with errno ENOSYS when the kernel cannot
 * tell (statx without STATX_ATTR_MOUNT_ROOT, before Linux 5.8). */
int lc_is_mount_root(const char *path);

/* The id of the mount `path` (followed, magic links too) is on, as
 * mountinfo and fdinfo give it (statx STATX_MNT_ID, Linux 5.8+), or -1. */
long long lc_mount_id(const char *path);

/* statfs(2)'s f_type (the filesystem's magic number) for `path`, or -1. */
long long lc_filesystem_magic(const char *path);

/* openat2(2): resolve `path` below `dirfd` with the given RESOLVE_* flags. */
int lc_openat2(int dirfd, const char *path, int flags, mode_t mode, unsigned long long resolve);

/* btrfs: snapshot the subvolume open at `source_fd` as `name` in the
 * directory open at `parent_fd`; read-only when `readonly` is set.
 * These return -2 when `name` is too long for the ioctl. */
int lc_btrfs_snapshot(int parent_fd, int source_fd, const char *name, int readonly);
int lc_btrfs_create_subvolume(int parent_fd, const char *name);
/* Makes the subvolume open at `fd` read-only. */
int lc_btrfs_make_read_only(int fd);
int lc_btrfs_destroy_subvolume(int parent_fd, const char *name);
/* 1 if some deleted subvolume of the btrfs filesystem of `fd` still waits
 * for the kernel to reclaim its space, 0 if none, -1 with errno on error. */
int lc_btrfs_deletions_pending(int fd);
/* Commits the current transaction of the btrfs filesystem of `fd`. */
int lc_btrfs_commit(int fd);
/* Simple quotas on the btrfs filesystem of `fd` (EINVAL before Linux 6.7). */
int lc_btrfs_enable_simple_quotas(int fd);
/* Limits the subvolume open at `subvolume_fd` to `bytes` (ENOTCONN: quotas off). */
int lc_btrfs_limit_subvolume(int subvolume_fd, unsigned long long bytes);
/* The filesystem id of the btrfs filesystem of `fd` into `out` (37 bytes). */
int lc_btrfs_fsid(int fd, char *out);
/* Kinds of ioctls lc_refuse_ioctls refuses (a bit each). */
enum { LC_REFUSE_SUBVOLUME_CREATION = 1, LC_REFUSE_PROJECT_CHANGES = 2 };
/* A seccomp filter on the calling thread (and what it starts) failing the
 * ioctls of `kind` with EPERM; once per thread and kind. */
int lc_refuse_ioctls(int kind);
/* The kinds lc_refuse_ioctls has refused on the calling thread. */
int lc_refused_ioctl_kinds(void);

/* Project quotas on the filesystem of `fd` (quotactl_fd). 1 when their
 * limits are enforced, 0 when not, -1 with errno (ESRCH, ENOSYS: off). */
int lc_project_quota_enforced(int fd);
/* 1 when project `id` holds blocks or inodes, 0 when not, -1 with errno. */
int lc_project_in_use(int fd, unsigned id);
/* Sets project `id`'s hard block limit to `bytes` (0: none). */
int lc_project_limit(int fd, unsigned id, unsigned long long bytes);
/* The project id of the file open at `fd`. */
int lc_project_of(int fd, unsigned *id);
/* Gives the directory open at `fd` project `id`, inherited by what is made in it. */
int lc_assign_project(int fd, unsigned id);

/* Attaches `backing_fd` to a free loop device with autoclear and returns the
 * open loop fd (its number in *number_out). Keep the fd open until the
 * device is mounted: closing the last opener of an unused autoclear device
 * detaches it. */
int lc_loop_attach(int backing_fd, int readonly, int *number_out);

/* fs-verity (FS_IOC_ENABLE_VERITY, FS_IOC_MEASURE_VERITY), SHA-256 over
 * 4096-byte blocks. enable: 0 or -1 with errno. measure: the digest's
 * length, written to digest (capacity bytes), or -1 with errno (ENODATA:
 * the file has no fs-verity). */
int lc_verity_enable(int fd);
int lc_verity_measure(int fd, unsigned char *digest, int capacity);

#endif
