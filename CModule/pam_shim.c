/* pam_loginchroot.so entry points. All policy and work live in Swift
 * (Sources/PamModule); this file only forwards and wraps variadic PAM calls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <security/pam_ext.h>

#include "pam_shim.h"

/* Implemented in Sources/PamModule/Entry.swift. */
extern int loginchroot_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv);
extern int loginchroot_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv);

#define LC_DATA_NAME "loginchroot.session"

struct lc_saved {
    char *session_ref;
    int host_ns_fd;
};

PAM_EXTERN int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return loginchroot_open_session(pamh, flags, argc, argv);
}

PAM_EXTERN int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return loginchroot_close_session(pamh, flags, argc, argv);
}

void lc_pam_log(pam_handle_t *pamh, int priority, const char *message)
{
    pam_syslog(pamh, priority, "%s", message);
}

void lc_pam_tell_user(pam_handle_t *pamh, int flags, const char *message)
{
    if (!(flags & PAM_SILENT))
        pam_error(pamh, "%s", message);
}

const char *lc_pam_item_string(pam_handle_t *pamh, int item)
{
    const void *value = NULL;
    if (pam_get_item(pamh, item, &value) != PAM_SUCCESS)
        return NULL;
    return value;
}

static void lc_saved_cleanup(pam_handle_t *pamh, void *data, int error_status)
{
    struct lc_saved *saved = data;
    (void)pamh;
    (void)error_status;
    if (saved->host_ns_fd >= 0)
        close(saved->host_ns_fd);
    free(saved->session_ref);
    free(saved);
}

int lc_pam_save_session(pam_handle_t *pamh, const char *session_ref, int host_ns_fd)
{
    /* On every failure the fd is closed here: the caller has given it up. */
    struct lc_saved *saved = calloc(1, sizeof(*saved));
    if (saved == NULL) {
        close(host_ns_fd);
        return PAM_BUF_ERR;
    }
    saved->host_ns_fd = host_ns_fd;
    saved->session_ref = strdup(session_ref);
    if (saved->session_ref == NULL) {
        lc_saved_cleanup(pamh, saved, 0);
        return PAM_BUF_ERR;
    }
    int rc = pam_set_data(pamh, LC_DATA_NAME, saved, lc_saved_cleanup);
    if (rc != PAM_SUCCESS)
        lc_saved_cleanup(pamh, saved, 0);
    return rc;
}

const char *lc_pam_load_session(pam_handle_t *pamh, int *host_ns_fd)
{
    const void *data = NULL;
    *host_ns_fd = -1;
    if (pam_get_data(pamh, LC_DATA_NAME, &data) != PAM_SUCCESS || data == NULL)
        return NULL;
    const struct lc_saved *saved = data;
    *host_ns_fd = saved->host_ns_fd;
    return saved->session_ref;
}
