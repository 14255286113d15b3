/* What a user can build in their root: N nested directories (a file and a
 * FIFO every 100 levels), or N nested btrfs subvolumes (the test image has
 * no btrfs-progs). Static, so it runs in any image from the bound /tmp.
 * `escapes` tries each way of making a subvolume in DIR (a plain one, also
 * through the i386 entry; one whose creator names no parent quota group;
 * snapshots of SOURCE; old and new ioctls) and prints "made" or "refused"
 * for each.
 * `projects` tries to move a new file in DIR out of DIR's project (a new
 * project id; DIR's inherit flag cleared) and prints "made" or "refused".
 * Usage: deeptree directories|subvolumes N DIR | deeptree escapes 0 DIR SOURCE
 *        | deeptree projects 0 DIR */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
static void attempt(int dir, const char *what, unsigned long request, void *args) {
    if (ioctl(dir, request, args) == 0)
        printf("made %s\n", what);
    else
        printf("refused %s: %m\n", what);
}

/* ioctl through the i386 entry (int $0x80), as a 32-bit program would
 * call it: the seccomp filter must check that ABI too. */
static void attempt_i386(int dir, const char *what, unsigned cmd, const void *args, size_t size) {
    void *low = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    if (low == MAP_FAILED) { printf("refused %s: no low memory\n", what); return; }
    memcpy(low, args, size);
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(54L), "b"((long)dir), "c"((long)cmd), "d"((long)low) : "memory");
    if (ret == 0)
        printf("made %s\n", what);
    else
        printf("refused %s: %s\n", what, strerror((int)-ret));
    munmap(low, size);
}

static int escapes(const char *source) {
    int dir = open(".", O_RDONLY | O_DIRECTORY);
    struct btrfs_ioctl_vol_args v1 = {0};
    strcpy(v1.name, "plain");
    attempt(dir, "subvolume", BTRFS_IOC_SUBVOL_CREATE, &v1);
    strcpy(v1.name, "plain-i386");
    attempt_i386(dir, "subvolume-i386", BTRFS_IOC_SUBVOL_CREATE, &v1, sizeof(v1));
    struct btrfs_qgroup_inherit none = {0};  /* no parent group: outside any limit */
    struct btrfs_ioctl_vol_args_v2 v2 = {0};
    strcpy(v2.name, "orphan");
    v2.flags = BTRFS_SUBVOL_QGROUP_INHERIT;
    v2.size = sizeof(none);
    v2.qgroup_inherit = &none;
    attempt(dir, "subvolume-v2-without-parent", BTRFS_IOC_SUBVOL_CREATE_V2, &v2);
    int from = open(source, O_RDONLY | O_DIRECTORY);
    struct btrfs_ioctl_vol_args s1 = {0};
    s1.fd = from;
    strcpy(s1.name, "snap");
    attempt(dir, "snapshot", BTRFS_IOC_SNAP_CREATE, &s1);
    struct btrfs_ioctl_vol_args_v2 s2 = {0};
    s2.fd = from;
    strcpy(s2.name, "snap2");
    attempt(dir, "snapshot-v2", BTRFS_IOC_SNAP_CREATE_V2, &s2);
    return 0;
}

static int projects(void) {
    int file = open("lc-project-file", O_CREAT | O_RDWR, 0644);
    struct fsxattr attributes = {0};
    if (file < 0 || ioctl(file, FS_IOC_FSGETXATTR, &attributes)) { perror("file"); return 1; }
    attributes.fsx_projid = 0;
    attempt(file, "project-id", FS_IOC_FSSETXATTR, &attributes);
    int dir = open(".", O_RDONLY | O_DIRECTORY);
    int flags = 0;
    if (ioctl(dir, FS_IOC_GETFLAGS, &flags)) { perror("getflags"); return 1; }
    flags &= ~FS_PROJINHERIT_FL;
    attempt(dir, "inherit-flag", FS_IOC_SETFLAGS, &flags);
    return 0;
}

int main(int argc, char **argv) {
    if (strcmp(argv[1], "projects") == 0)
        return chdir(argv[3]) ? 1 : projects();
    if (strcmp(argv[1], "escapes") == 0)
        return chdir(argv[3]) ? 1 : escapes(argv[4]);
    int subvolumes = strcmp(argv[1], "subvolumes") == 0;
    long n = atol(argv[2]);
    if (chdir(argv[3])) { perror("chdir"); return 1; }
    for (long i = 0; i < n; i++) {
        if (subvolumes) {
            struct btrfs_ioctl_vol_args args = {0};
            strcpy(args.name, "s");
            int dir = open(".", O_RDONLY | O_DIRECTORY);
            if (ioctl(dir, BTRFS_IOC_SUBVOL_CREATE, &args)) { perror("subvol"); return 1; }
            close(dir);
            if (chdir("s")) { perror("chdir"); return 1; }
        } else {
            if (mkdir("d", 0755) || chdir("d")) { perror("mkdir"); return 1; }
            if (i % 100 == 0) { int fd = open("f", O_CREAT | O_WRONLY, 0644); close(fd); mkfifo("p", 0644); }
        }
    }
    printf("built %ld\n", n);
    return 0;
}
