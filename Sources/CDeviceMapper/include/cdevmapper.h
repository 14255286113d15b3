/* The libdevmapper calls the dm-thin backend makes, each one dm_task run to
 * completion (udev cookie included). libdevmapper's own logging is captured,
 * never printed: the module runs inside sshd and login. On failure a call
 * returns -1, errno is set, and lcdm_last_error() has libdevmapper's text. */
#ifndef LOGINCHROOT_CDEVMAPPER_H
#define LOGINCHROOT_CDEVMAPPER_H

#include <stddef.h>
#include <stdint.h>

/* Loads libdevmapper (routing its log into lcdm_last_error) and chooses
 * whether device nodes come from udev (wait on cookies) or from libdevmapper
 * itself. -1 with errno ELIBACC when libdevmapper cannot be loaded (every
 * call then fails the same way). */
int lcdm_setup(int udev_running);
/* The calling thread's last libdevmapper error message ("" if none). */
const char *lcdm_last_error(void);

/* Creates `name` with a one-target table and activates it. */
int lcdm_create(const char *name, const char *uuid, const char *target_type,
                uint64_t sectors, const char *params);
/* Removes `name`; with `deferred`, a busy device goes when its last user closes it. */
int lcdm_remove(const char *name, int deferred);
int lcdm_suspend(const char *name);
int lcdm_resume(const char *name);
/* Sends a target message (e.g. "create_thin 1") to sector 0 of `name`. */
int lcdm_message(const char *name, const char *message);

struct lcdm_info {
    int exists;
    int deferred_remove;
    int suspended;
    uint32_t major;
    uint32_t minor;
};
int lcdm_info(const char *name, struct lcdm_info *info);
/* The status line of `name`'s first target, into `buffer`. */
int lcdm_status(const char *name, char *buffer, size_t size);

#endif
