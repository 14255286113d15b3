/* The C side of pam_loginchroot.so: what Swift cannot call directly
 * (variadic pam_syslog/pam_error) and the open->close handover. */
#ifndef LOGINCHROOT_PAM_SHIM_H
#define LOGINCHROOT_PAM_SHIM_H

#include <stddef.h>
#include <security/pam_appl.h>
#include <security/pam_modules.h>

/* Logs one line to syslog through PAM (never to stdout/stderr). */
void lc_pam_log(pam_handle_t *pamh, int priority, const char *message);

/* Shows one error line to the user through the conversation, unless silent. */
void lc_pam_tell_user(pam_handle_t *pamh, int flags, const char *message);

/* PAM_USER and PAM_SERVICE as raw bytes, or NULL. */
const char *lc_pam_item_string(pam_handle_t *pamh, int item);

/* Hands the session record name and the fd of the host mount namespace from
 * open_session to close_session. The fd is closed when the handle ends. */
int lc_pam_save_session(pam_handle_t *pamh, const char *session_ref, int host_ns_fd);

/* Returns the saved record name (or NULL) and stores the saved fd (or -1). */
const char *lc_pam_load_session(pam_handle_t *pamh, int *host_ns_fd);

#endif
