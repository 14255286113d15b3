/* What a user can build in their root: N nested directories (a file and a
 * FIFO every 100 levels), or N nested btrfs subvolumes (the test image has
 * no btrfs-progs). Static, so it runs in any image from the bound /tmp.
 * Usage: deeptree directories|subvolumes N DIR */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
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
