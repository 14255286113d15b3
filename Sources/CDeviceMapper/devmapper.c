/* Implementation of include/cdevmapper.h over libdevmapper, which is opened
 * on first use rather than linked: loading it (with the libselinux and
 * libudev it pulls in) cost every login about 2 ms, btrfs and overlay logins
 * included (BENCHMARKS.md). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <libdevmapper.h>

#include "cdevmapper.h"

static __thread char last_error[512];

static void capture_log(int level, const char *file, int line, int dm_errno_or_class, const char *format, ...)
{
    (void)file; (void)line; (void)dm_errno_or_class;
    if ((level & 7) > 3)
        return;  /* the low bits are a syslog level: keep errors (3) and worse */
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof(last_error), format, args);
    va_end(args);
}

#define DM_FUNCTIONS(X) X(dm_log_with_errno_init) X(dm_udev_set_sync_support) X(dm_task_destroy) \
    X(dm_lib_release) X(dm_task_set_cookie) X(dm_task_run) X(dm_task_get_errno) X(dm_udev_wait) \
    X(dm_task_create) X(dm_task_set_name) X(dm_task_set_uuid) X(dm_task_add_target) \
    X(dm_task_deferred_remove) X(dm_task_set_sector) X(dm_task_set_message) X(dm_task_get_info) \
    X(dm_get_next_target)
#define DECLARE(name) __typeof__(name) *name;
static struct { DM_FUNCTIONS(DECLARE) } dm;
static int dm_loaded;
static char dm_load_error[256];
static pthread_once_t dm_once = PTHREAD_ONCE_INIT;

static void load_once(void)
{
    /* Debian's soname, then Fedora's. RTLD_NODELETE: the module itself is
     * never unloaded either. */
    void *library = dlopen("libdevmapper.so.1.02.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!library)
        library = dlopen("libdevmapper.so.1.02", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!library) {
        snprintf(dm_load_error, sizeof dm_load_error, "cannot load libdevmapper (install libdevmapper1.02.1): %s",
                 dlerror());
        return;
    }
#define LOOKUP(name) if (!(*(void **)&dm.name = dlsym(library, #name))) { \
        snprintf(dm_load_error, sizeof dm_load_error, "libdevmapper has no %s", #name); \
        return; \
    }
    DM_FUNCTIONS(LOOKUP)
    dm.dm_log_with_errno_init(capture_log);
    dm_loaded = 1;
}

/* 0 once libdevmapper is loaded; else -1 with errno and the reason set. */
static int load(void)
{
    pthread_once(&dm_once, load_once);
    if (dm_loaded)
        return 0;
    snprintf(last_error, sizeof last_error, "%s", dm_load_error);
    errno = ELIBACC;
    return -1;
}

int lcdm_setup(int udev_running)
{
    if (load())
        return -1;
    /* Without udev, libdevmapper makes the /dev/mapper nodes itself. */
    dm.dm_udev_set_sync_support(udev_running);
    return 0;
}

const char *lcdm_last_error(void) { return last_error; }

/* Ends a task: libdevmapper keeps /dev/mapper/control open between calls,
 * and the module runs in sshd and login, whose children must not inherit
 * it. Returns `result` with errno as the task left it. */
static int finish(struct dm_task *task, int result)
{
    int saved = errno;
    dm.dm_task_destroy(task);
    dm.dm_lib_release();
    errno = saved;
    return result;
}

/* Runs `task` (waiting for udev, or making the nodes, when `with_cookie`).
 * On failure the task is finished and -1 returned with errno set; on
 * success the caller reads the results, then finishes it. */
static int run(struct dm_task *task, int with_cookie)
{
    uint32_t cookie = 0;
    last_error[0] = '\0';
    if (with_cookie && !dm.dm_task_set_cookie(task, &cookie, 0)) {
        errno = EIO;
        return finish(task, -1);
    }
    int ok = dm.dm_task_run(task);
    int code = ok ? 0 : dm.dm_task_get_errno(task);
    if (with_cookie)
        (void)dm.dm_udev_wait(cookie);
    if (!ok) {
        errno = code ? code : EIO;
        return finish(task, -1);
    }
    return 0;
}

/* A task that changes nothing the caller reads back. */
static int run_task(struct dm_task *task, int with_cookie)
{
    return run(task, with_cookie) ? -1 : finish(task, 0);
}

static struct dm_task *named_task(int type, const char *name)
{
    if (load())
        return NULL;
    struct dm_task *task = dm.dm_task_create(type);
    if (!task) {
        errno = ENOMEM;
        return NULL;
    }
    if (name && !dm.dm_task_set_name(task, name)) {
        errno = EINVAL;
        finish(task, -1);
        return NULL;
    }
    return task;
}

int lcdm_create(const char *name, const char *uuid, const char *target_type,
                uint64_t sectors, const char *params)
{
    struct dm_task *task = named_task(DM_DEVICE_CREATE, name);
    if (!task)
        return -1;
    if ((uuid && *uuid && !dm.dm_task_set_uuid(task, uuid)) ||
        !dm.dm_task_add_target(task, 0, sectors, target_type, params)) {
        errno = EINVAL;
        return finish(task, -1);
    }
    return run_task(task, 1);
}

int lcdm_remove(const char *name, int deferred)
{
    struct dm_task *task = named_task(DM_DEVICE_REMOVE, name);
    if (!task)
        return -1;
    if (deferred)
        (void)dm.dm_task_deferred_remove(task);
    return run_task(task, 1);
}

int lcdm_suspend(const char *name)
{
    /* Suspending flushes and freezes a mounted filesystem first (lockfs). */
    struct dm_task *task = named_task(DM_DEVICE_SUSPEND, name);
    return task ? run_task(task, 0) : -1;
}

int lcdm_resume(const char *name)
{
    struct dm_task *task = named_task(DM_DEVICE_RESUME, name);
    return task ? run_task(task, 1) : -1;
}

int lcdm_message(const char *name, const char *message)
{
    struct dm_task *task = named_task(DM_DEVICE_TARGET_MSG, name);
    if (!task)
        return -1;
    if (!dm.dm_task_set_sector(task, 0) || !dm.dm_task_set_message(task, message)) {
        errno = EINVAL;
        return finish(task, -1);
    }
    return run_task(task, 0);
}

int lcdm_info(const char *name, struct lcdm_info *out)
{
    memset(out, 0, sizeof(*out));
    struct dm_task *task = named_task(DM_DEVICE_INFO, name);
    if (!task || run(task, 0))
        return -1;
    struct dm_info info;
    if (!dm.dm_task_get_info(task, &info)) {
        errno = EIO;
        return finish(task, -1);
    }
    out->exists = info.exists;
    out->deferred_remove = info.deferred_remove;
    out->suspended = info.suspended;
    out->major = info.major;
    out->minor = info.minor;
    return finish(task, 0);
}

int lcdm_status(const char *name, char *buffer, size_t size)
{
    struct dm_task *task = named_task(DM_DEVICE_STATUS, name);
    if (!task || run(task, 0))
        return -1;
    uint64_t start, length;
    char *type = NULL, *params = NULL;
    (void)dm.dm_get_next_target(task, NULL, &start, &length, &type, &params);
    snprintf(buffer, size, "%s", params ? params : "");
    return finish(task, 0);
}
