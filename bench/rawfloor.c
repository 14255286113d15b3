/* The raw floor: the bare calls a session root needs on each backend, with
 * no logic around them: make the snapshot and mount it (begin), unmount it
 * and remove it (end). Prints one JSON object of per-cycle ns on stdout.
 * Runs in a private mount namespace of its own, so nothing propagates.
 *
 *   rawfloor btrfs SOURCE_SUBVOLUME WORKDIR N
 *   rawfloor overlay LOWER_DIR WORKDIR N         (a tmpfs upper, as loginchroot's default)
 *   rawfloor dm-thin POOL ORIGIN_THIN_ID SECTORS FSTYPE WORKDIR N
 *
 * The dm-thin floor is built only with -DWITH_DEVMAPPER (-ldevmapper). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_DEVMAPPER
#include <libdevmapper.h>
#endif

static void die(const char *call, const char *path)
{
    fprintf(stderr, "rawfloor: %s %s: %s\n", call, path, strerror(errno));
    exit(1);
}

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void btrfs_begin(int source, int workdir, const char *name, const char *snapshot, const char *target)
{
    struct btrfs_ioctl_vol_args_v2 args = { .fd = source };
    snprintf(args.name, sizeof args.name, "%s", name);
    if (ioctl(workdir, BTRFS_IOC_SNAP_CREATE_V2, &args))
        die("BTRFS_IOC_SNAP_CREATE_V2", name);
    if (mount(snapshot, target, NULL, MS_BIND, NULL))
        die("mount", target);
}

static void btrfs_end(int workdir, const char *name, const char *target)
{
    struct btrfs_ioctl_vol_args args = { 0 };
    if (umount2(target, 0))
        die("umount", target);
    snprintf(args.name, sizeof args.name, "%s", name);
    if (ioctl(workdir, BTRFS_IOC_SNAP_DESTROY, &args))
        die("BTRFS_IOC_SNAP_DESTROY", name);
}

static void overlay_begin(const char *lower, const char *base)
{
    char path[4096], options[8192];
    if (mount("tmpfs", base, "tmpfs", 0, "mode=0755"))
        die("mount tmpfs", base);
    static const char *const subdirectories[] = { "upper", "work", "root" };
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", base, subdirectories[k]);
        if (mkdir(path, 0755))
            die("mkdir", path);
    }
    snprintf(options, sizeof options, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, base, base);
    snprintf(path, sizeof path, "%s/root", base);
    if (mount("overlay", path, "overlay", 0, options))
        die("mount overlay", path);
}

static void overlay_end(const char *base)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/root", base);
    if (umount2(path, 0))
        die("umount", path);
    if (umount2(base, 0))
        die("umount", base);
}

#ifdef WITH_DEVMAPPER
static void dm_run(int type, const char *name, const char *message, uint64_t sectors, const char *params)
{
    struct dm_task *task = dm_task_create(type);
    uint32_t cookie = 0;
    int with_cookie = type == DM_DEVICE_CREATE || type == DM_DEVICE_REMOVE;
    if (!task || !dm_task_set_name(task, name))
        die("dm_task_create", name);
    if (message && (!dm_task_set_sector(task, 0) || !dm_task_set_message(task, message)))
        die("dm_task_set_message", name);
    if (params && !dm_task_add_target(task, 0, sectors, "thin", params))
        die("dm_task_add_target", name);
    if (with_cookie && !dm_task_set_cookie(task, &cookie, 0))
        die("dm_task_set_cookie", name);
    if (!dm_task_run(task))
        die(message ? message : "dm_task_run", name);
    if (with_cookie)
        dm_udev_wait(cookie);  /* without udev: makes or removes the node */
    dm_task_destroy(task);
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: see the comment at the top of rawfloor.c\n");
        return 2;
    }
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        die("unshare", "/");
    const char *backend = argv[1];
    long n = atol(argv[argc - 1]);
    const char *workdir = argv[argc - 2];
    long long *begins = calloc((size_t)n, sizeof *begins), *ends = calloc((size_t)n, sizeof *ends);
    char target[4096], name[64], snapshot[4096];
    snprintf(target, sizeof target, "%s/mnt", workdir);
    if (mkdir(target, 0755) && errno != EEXIST)
        die("mkdir", target);

    if (!strcmp(backend, "btrfs") && argc == 5) {
        int source = open(argv[2], O_RDONLY | O_DIRECTORY), dir = open(workdir, O_RDONLY | O_DIRECTORY);
        if (source < 0 || dir < 0)
            die("open", argv[2]);
        for (long i = 0; i < n; i++) {
            snprintf(name, sizeof name, "floor-%ld", i);
            snprintf(snapshot, sizeof snapshot, "%s/%s", workdir, name);
            long long t0 = now_ns();
            btrfs_begin(source, dir, name, snapshot, target);
            long long t1 = now_ns();
            btrfs_end(dir, name, target);
            begins[i] = t1 - t0;
            ends[i] = now_ns() - t1;
        }
    } else if (!strcmp(backend, "overlay") && argc == 5) {
        for (long i = 0; i < n; i++) {
            long long t0 = now_ns();
            overlay_begin(argv[2], target);
            long long t1 = now_ns();
            overlay_end(target);
            begins[i] = t1 - t0;
            ends[i] = now_ns() - t1;
        }
#ifdef WITH_DEVMAPPER
    } else if (!strcmp(backend, "dm-thin") && argc == 8) {
        const char *pool = argv[2], *origin = argv[3], *fstype = argv[5];
        uint64_t sectors = strtoull(argv[4], NULL, 10);
        char message[128], params[512], device[256];
        dm_udev_set_sync_support(0);
        for (long i = 0; i < n; i++) {
            int id = 1000000 + (int)i;  /* far above the ids loginchroot hands out */
            snprintf(name, sizeof name, "%s-floor", pool);
            snprintf(device, sizeof device, "/dev/mapper/%s", name);
            long long t0 = now_ns();
            snprintf(message, sizeof message, "create_snap %d %s", id, origin);
            dm_run(DM_DEVICE_TARGET_MSG, pool, message, 0, NULL);
            snprintf(params, sizeof params, "/dev/mapper/%s %d", pool, id);
            dm_run(DM_DEVICE_CREATE, name, NULL, sectors, params);
            if (mount(device, target, fstype, 0, !strcmp(fstype, "xfs") ? "nouuid" : NULL))
                die("mount", device);
            long long t1 = now_ns();
            if (umount2(target, 0))
                die("umount", target);
            dm_run(DM_DEVICE_REMOVE, name, NULL, 0, NULL);
            snprintf(message, sizeof message, "delete %d", id);
            dm_run(DM_DEVICE_TARGET_MSG, pool, message, 0, NULL);
            begins[i] = t1 - t0;
            ends[i] = now_ns() - t1;
        }
#endif
    } else {
        fprintf(stderr, "rawfloor: unknown backend or wrong arguments (see rawfloor.c)\n");
        return 2;
    }
    printf("{\"begin_ns\": [");
    for (long i = 0; i < n; i++)
        printf("%s%lld", i ? ", " : "", begins[i]);
    printf("], \"end_ns\": [");
    for (long i = 0; i < n; i++)
        printf("%s%lld", i ? ", " : "", ends[i]);
    printf("]}\n");
    rmdir(target);
    return 0;
}
