/* Implementations of include/clinux.h, compiled with _GNU_SOURCE (which must
 * not leak into the header: it changes glibc structs Swift also imports). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <linux/quota.h>
#include <linux/dqblk_xfs.h>
#include <stddef.h>

#include "clinux.h"

const int LC_CLONE_NEWNS = CLONE_NEWNS;
const int LC_CLONE_FS = CLONE_FS;
const unsigned long long LC_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
const unsigned long long LC_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const unsigned long long LC_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const int LC_O_PATH = O_PATH;

/* Makes the mount at `path` (and, when `recursive`, every mount below it)
 * read-only in one call (mount_setattr, Linux 5.12+). */
int lc_make_readonly(const char *path, int recursive)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_RDONLY;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof(attr));
}

int lc_harden_mount(const char *path, int nosuid)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME | (nosuid ? MOUNT_ATTR_NOSUID : 0);
    attr.attr_clr = MOUNT_ATTR__ATIME;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, 0, &attr, sizeof(attr));
}

int lc_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
int lc_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
int lc_pidfd_kill(int pidfd) { return (int)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0); }

int lc_getresuid(uid_t *real, uid_t *effective, uid_t *saved) { return getresuid(real, effective, saved); }
int lc_set_real_uid(uid_t real) { return setresuid(real, (uid_t)-1, (uid_t)-1); }

int lc_unshare(int flags) { return unshare(flags); }
int lc_setns(int fd, int nstype) { return setns(fd, nstype); }
int lc_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int lc_thread_cpus(int *cpus, int max)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < max; cpu++)
        if (CPU_ISSET(cpu, &set))
            cpus[count++] = cpu;
    return count;
}

int lc_set_thread_cpus(const int *cpus, int count)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++)
        if (cpus[i] >= 0 && cpus[i] < CPU_SETSIZE)
            CPU_SET(cpus[i], &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

/* openat2(2): resolve `path` below `dirfd` with the given RESOLVE_* flags. */
int lc_openat2(int dirfd, const char *path, int flags, mode_t mode, unsigned long long resolve)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (unsigned long long)flags;
    /* O_TMPFILE contains the O_DIRECTORY bit: test it whole. */
    how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* btrfs: snapshot the subvolume open at `source_fd` as `name` in the
 * directory open at `parent_fd`; read-only when `readonly` is set. */
int lc_btrfs_snapshot(int parent_fd, int source_fd, const char *name, int readonly)
{
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof(args));
    args.fd = source_fd;
    if (readonly)
        args.flags |= BTRFS_SUBVOL_RDONLY;
    if (strlen(name) >= sizeof(args.name))
        return -2;
    strncpy(args.name, name, sizeof(args.name) - 1);
    return ioctl(parent_fd, BTRFS_IOC_SNAP_CREATE_V2, &args);
}

int lc_btrfs_create_subvolume(int parent_fd, const char *name)
{
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof(args));
    if (strlen(name) >= sizeof(args.name))
        return -2;
    strncpy(args.name, name, sizeof(args.name) - 1);
    return ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE_V2, &args);
}

/* Makes the subvolume open at `fd` read-only (a generation filled in place). */
int lc_btrfs_make_read_only(int fd)
{
    unsigned long long flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
        return -1;
    flags |= BTRFS_SUBVOL_RDONLY;
    return ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags);
}

/* Each deleted subvolume whose space the kernel's cleaner has not yet
 * reclaimed leaves an orphan item (offset: its root id) in the root tree,
 * the same items `btrfs subvolume sync` waits on. */
int lc_btrfs_deletions_pending(int fd)
{
    struct btrfs_ioctl_search_args args;
    memset(&args, 0, sizeof(args));
    args.key.tree_id = BTRFS_ROOT_TREE_OBJECTID;
    args.key.min_objectid = args.key.max_objectid = BTRFS_ORPHAN_OBJECTID;
    args.key.min_type = args.key.max_type = BTRFS_ORPHAN_ITEM_KEY;
    args.key.max_offset = (__u64)-1;
    args.key.max_transid = (__u64)-1;
    args.key.nr_items = 1;
    if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args))
        return -1;
    return args.key.nr_items > 0;
}

/* Commits the current transaction of the btrfs filesystem of `fd`. */
int lc_btrfs_commit(int fd)
{
    return ioctl(fd, BTRFS_IOC_SYNC, NULL);
}

int lc_btrfs_destroy_subvolume(int parent_fd, const char *name)
{
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof(args));
    if (strlen(name) >= sizeof(args.name))
        return -2;
    strncpy(args.name, name, sizeof(args.name) - 1);
    return ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args);
}

/* Turns on simple quotas (squota, Linux 6.7): each extent is charged to
 * the subvolume that wrote it, so a snapshot starts at zero and stays
 * unaffected when the subvolume it came from is deleted. A no-op when
 * quotas are on already (in either mode). */
int lc_btrfs_enable_simple_quotas(int fd)
{
    struct btrfs_ioctl_quota_ctl_args args;
    memset(&args, 0, sizeof(args));
    args.cmd = 4; /* BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, not in 6.1's headers */
    return ioctl(fd, BTRFS_IOC_QUOTA_CTL, &args);
}

/* Limits what the subvolume open at `subvolume_fd` may hold to `bytes`
 * (its own qgroup's referenced bytes: under simple quotas, what it wrote). */
int lc_btrfs_limit_subvolume(int subvolume_fd, unsigned long long bytes)
{
    struct btrfs_ioctl_qgroup_limit_args args;
    memset(&args, 0, sizeof(args));
    args.qgroupid = 0; /* the subvolume of the fd */
    args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
    args.lim.max_rfer = bytes;
    return ioctl(subvolume_fd, BTRFS_IOC_QGROUP_LIMIT, &args);
}

/* The filesystem id of the btrfs filesystem of `fd`, as sysfs names its
 * directory (/sys/fs/btrfs/FSID), into `out` (37 bytes). */
int lc_btrfs_fsid(int fd, char *out)
{
    struct btrfs_ioctl_fs_info_args info;
    memset(&info, 0, sizeof(info));
    if (ioctl(fd, BTRFS_IOC_FS_INFO, &info) != 0)
        return -1;
    const unsigned char *b = info.fsid;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

/* The ioctls each kind of lc_refuse_ioctls refuses. */
static int refused_commands(int kind, uint32_t *out)
{
    switch (kind) {
    case LC_REFUSE_SUBVOLUME_CREATION:
        /* A subvolume a user nests in their root has a qgroup of its own,
         * and its creator can name that group's parents (none included):
         * it would escape the root's limit. */
        out[0] = (uint32_t)BTRFS_IOC_SUBVOL_CREATE;
        out[1] = (uint32_t)BTRFS_IOC_SUBVOL_CREATE_V2;
        out[2] = (uint32_t)BTRFS_IOC_SNAP_CREATE;
        out[3] = (uint32_t)BTRFS_IOC_SNAP_CREATE_V2;
        return 4;
    case LC_REFUSE_PROJECT_CHANGES:
        /* The owner of a file may give it another project id, or clear a
         * directory's inherit flag, and overlayfs passes both on to the
         * upper layer with the mounter's rights: the file would leave the
         * root's project quota. */
        out[0] = (uint32_t)FS_IOC_FSSETXATTR;
        out[1] = (uint32_t)FS_IOC_SETFLAGS;
        out[2] = (uint32_t)FS_IOC32_SETFLAGS;
        return 3;
    }
    return -1;
}

static __thread int refused_kinds;

int lc_refused_ioctl_kinds(void)
{
    return refused_kinds;
}

/* A seccomp filter on the calling thread (and what it forks) that fails the
 * ioctls of `kind` with EPERM, once per thread and kind. Checked for every
 * ABI a process of the session can call ioctl through: x86-64, x32 and
 * i386 (aarch64 where built there). */
int lc_refuse_ioctls(int kind)
{
    if (refused_kinds & kind)
        return 0; /* one filter per thread, however many sessions it opens */
    uint32_t commands[4];
    int count = refused_commands(kind, commands);
    if (count < 0) {
        errno = EINVAL;
        return -1;
    }
    struct sock_filter code[32];
    unsigned n = 0;
#define LC_STMT(...) (code[n++] = (struct sock_filter)BPF_STMT(__VA_ARGS__))
#define LC_JUMP(...) (code[n++] = (struct sock_filter)BPF_JUMP(__VA_ARGS__))
    LC_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
#if defined(__x86_64__)
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 5);
    LC_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 16, 7, 0);                     /* ioctl */
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40000000 | 16, 6, 0);        /* x32 */
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40000000 | 514, 5, 0);       /* x32 compat */
    LC_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 0, 2);
    LC_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 54, 1, 0);                     /* i386 ioctl */
    LC_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#elif defined(__aarch64__)
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_AARCH64, 0, 2);
    LC_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 29, 1, 0);                     /* ioctl */
    LC_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#else
#error "lc_refuse_ioctls: no syscall numbers for this architecture"
#endif
    /* An ioctl: its command is the low 32 bits of the second argument. */
    LC_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]));
    for (int i = 0; i < count; i++)
        LC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, commands[i], (uint8_t)(count - i), 0);
    LC_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    LC_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
#undef LC_STMT
#undef LC_JUMP
    struct sock_fprog program = { .len = (unsigned short)n, .filter = code };
    /* No SECCOMP_FILTER_FLAG_TSYNC: the PAM caller's other threads are its
     * own business, and a thread that opens sessions one after another keeps
     * making roots (see the README). Root needs no no_new_privs. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0)
        return -1;
    refused_kinds |= kind;
    return 0;
}

/* Project quotas, through quotactl_fd(2) (Linux 5.14) on any fd of the
 * filesystem, and the file attributes that carry a file's project id. */
static long quotactl_on(int fd, unsigned cmd, unsigned id, void *addr)
{
    return syscall(__NR_quotactl_fd, fd, QCMD(cmd, PRJQUOTA), id, addr);
}

int lc_project_quota_enforced(int fd)
{
    struct fs_quota_statv state;
    memset(&state, 0, sizeof(state));
    state.qs_version = FS_QSTATV_VERSION1;
    if (quotactl_on(fd, Q_XGETQSTATV, 0, &state) != 0)
        return -1;
    return (state.qs_flags & FS_QUOTA_PDQ_ENFD) != 0;
}

int lc_project_in_use(int fd, unsigned id)
{
    struct if_dqblk quota;
    memset(&quota, 0, sizeof(quota));
    if (quotactl_on(fd, Q_GETQUOTA, id, &quota) != 0)
        return errno == ENOENT ? 0 : -1;
    return quota.dqb_curspace > 0 || quota.dqb_curinodes > 0;
}

int lc_project_limit(int fd, unsigned id, unsigned long long bytes)
{
    struct if_dqblk quota;
    memset(&quota, 0, sizeof(quota));
    quota.dqb_bhardlimit = (bytes + 1023) / 1024; /* in 1 KiB blocks */
    quota.dqb_valid = QIF_BLIMITS;
    return (int)quotactl_on(fd, Q_SETQUOTA, id, &quota);
}

int lc_project_of(int fd, unsigned *id)
{
    struct fsxattr attributes;
    if (ioctl(fd, FS_IOC_FSGETXATTR, &attributes) != 0)
        return -1;
    *id = attributes.fsx_projid;
    return 0;
}

int lc_assign_project(int fd, unsigned id)
{
    struct fsxattr attributes;
    if (ioctl(fd, FS_IOC_FSGETXATTR, &attributes) != 0)
        return -1;
    attributes.fsx_projid = id;
    attributes.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    return ioctl(fd, FS_IOC_FSSETXATTR, &attributes);
}

/* Attaches `backing_fd` to a free loop device with autoclear, so the device
 * goes away when its last user (the mount) does. Returns the loop number. */
int lc_loop_attach(int backing_fd, int readonly, int *number_out)
{
    int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (control < 0)
        return -1;
    for (int attempt = 0; attempt < 16; attempt++) {
        int number = ioctl(control, LOOP_CTL_GET_FREE);
        if (number < 0)
            break;
        char path[64];
        snprintf(path, sizeof(path), "/dev/loop%d", number);
        int loop = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (loop < 0)
            continue;
        struct loop_config config;
        memset(&config, 0, sizeof(config));
        config.fd = (unsigned int)backing_fd;
        /* A read-only image is read with direct I/O: its pages are cached
         * once, by the filesystem on the device, not twice. */
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY | LO_FLAGS_DIRECT_IO : 0);
        if (ioctl(loop, LOOP_CONFIGURE, &config) == 0) {
            close(control);
            *number_out = number;
            return loop;
        }
        int saved = errno;
        close(loop);
        if (saved != EBUSY) {
            close(control);
            errno = saved;
            return -1;
        }
    }
    close(control);
    return -1;
}

int lc_is_mount_root(const char *path)
{
    struct statx stx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx))
        return -1;
    if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
        errno = ENOSYS;
        return -1;
    }
    return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

long long lc_mount_id(const char *path)
{
    struct statx stx;
    if (statx(AT_FDCWD, path, 0, STATX_MNT_ID, &stx))
        return -1;
    if (!(stx.stx_mask & STATX_MNT_ID)) {
        errno = ENOSYS;
        return -1;
    }
    return (long long)stx.stx_mnt_id;
}

long long lc_filesystem_magic(const char *path)
{
    struct statfs info;
    return statfs(path, &info) ? -1 : (long long)info.f_type;
}

int lc_verity_enable(int fd)
{
    struct fsverity_enable_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.version = 1;
    arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
    arg.block_size = 4096;
    return ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
}

int lc_verity_measure(int fd, unsigned char *digest, int capacity)
{
    union {
        struct fsverity_digest head;
        unsigned char room[sizeof(struct fsverity_digest) + 64];
    } measured;
    measured.head.digest_size = 64;
    if (ioctl(fd, FS_IOC_MEASURE_VERITY, &measured) != 0)
        return -1;
    if (measured.head.digest_algorithm != FS_VERITY_HASH_ALG_SHA256 || measured.head.digest_size > capacity) {
        errno = EOVERFLOW;
        return -1;
    }
    memcpy(digest, measured.head.digest, measured.head.digest_size);
    return measured.head.digest_size;
}
