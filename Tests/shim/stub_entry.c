/* Stand-ins for the Swift entry points (Sources/PamModule/Entry.swift),
 * linked with CModule/pam_shim.c into a test module by Tests/shim/run.sh.
 * They drive every shim function from inside a real PAM stack (pam_set_data
 * only works there) and report to the driver through the environment. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "pam_shim.h"

static int failed(const char *what)
{
    fprintf(stderr, "stub: %s\n", what);
    return PAM_SESSION_ERR;
}

int loginchroot_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    if (argc != 2 || strcmp(argv[1], "%n%n%s") != 0)
        return failed("module arguments not forwarded unchanged");
    const char *user = lc_pam_item_string(pamh, PAM_USER);
    setenv("LC_SHIM_SEEN_USER", user ? user : "(null)", 1);
    if (lc_pam_item_string(pamh, PAM_RUSER) != NULL)
        return failed("an unset item is not NULL");
    lc_pam_log(pamh, LOG_NOTICE, "lc-shim-test %n%n%s%s%x");
    lc_pam_tell_user(pamh, flags, "denied %n%s");
    int fd;
    if (lc_pam_load_session(pamh, &fd) != NULL || fd != -1)
        return failed("a session was loaded before any was saved");
    /* A second save replaces the first, whose fd must be closed then. */
    int first = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int second = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (lc_pam_save_session(pamh, "first", first) != PAM_SUCCESS
        || lc_pam_save_session(pamh, user ? user : "", second) != PAM_SUCCESS)
        return failed("save failed");
    if (fcntl(first, F_GETFD) != -1)
        return failed("the replaced session's fd is still open");
    char text[16];
    snprintf(text, sizeof(text), "%d", second);
    setenv("LC_SHIM_SAVED_FD", text, 1);
    return PAM_SUCCESS;
}

int loginchroot_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags; (void)argc; (void)argv;
    int fd;
    const char *ref = lc_pam_load_session(pamh, &fd);
    const char *user = lc_pam_item_string(pamh, PAM_USER);
    if (ref == NULL || user == NULL || strcmp(ref, user) != 0)
        return failed("close did not get the session open saved");
    if (fd != atoi(getenv("LC_SHIM_SAVED_FD")))
        return failed("close did not get the fd open saved");
    return PAM_SUCCESS;
}
