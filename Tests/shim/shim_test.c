/* Drives the C shim (CModule/pam_shim.c, in a test module with stand-ins for
 * the Swift side: stub_entry.c) through real libpam, everything built with
 * AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer
 * (Tests/shim/run.sh, part of `make unit-test`). Any sanitizer finding
 * aborts the run; every check can fail.
 *
 *   shim_test CONFDIR   (CONFDIR/lc-shim-test names the test module) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <security/pam_appl.h>

static int failures;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

static int shown;
static char last_shown[4096];

static int conversation(int n, const struct pam_message **messages, struct pam_response **responses, void *data)
{
    (void)data;
    struct pam_response *replies = calloc((size_t)n, sizeof(*replies));
    if (replies == NULL)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        shown++;
        snprintf(last_shown, sizeof(last_shown), "%s", messages[i]->msg);
    }
    *responses = replies;
    return PAM_SUCCESS;
}

static int fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

/* One login: open, then close unless `close_it` is 0, then pam_end. */
static void login(const char *confdir, const char *user, int flags, int close_it)
{
    struct pam_conv conv = { conversation, NULL };
    pam_handle_t *pamh = NULL;
    int shown_before = shown;
    unsetenv("LC_SHIM_SAVED_FD");
    CHECK(pam_start_confdir("lc-shim-test", user, &conv, confdir, &pamh) == PAM_SUCCESS);
    if (pamh == NULL)
        return;
    CHECK(pam_open_session(pamh, flags) == PAM_SUCCESS);
    const char *seen = getenv("LC_SHIM_SEEN_USER");
    CHECK(seen != NULL && strcmp(seen, user) == 0);
    if (flags & PAM_SILENT)
        CHECK(shown == shown_before);
    else
        CHECK(shown == shown_before + 1 && strcmp(last_shown, "denied %n%s") == 0);
    if (close_it)
        CHECK(pam_close_session(pamh, 0) == PAM_SUCCESS);
    const char *saved = getenv("LC_SHIM_SAVED_FD");
    int fd = saved ? atoi(saved) : -1;
    CHECK(fd >= 0 && fd_is_open(fd));
    pam_end(pamh, PAM_SUCCESS);
    CHECK(fd >= 0 && !fd_is_open(fd));  /* the handover's fd dies with the handle */
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFDIR\n", argv[0]);
        return 2;
    }
    char long_name[300];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    const char *users[] = { "lctest1", long_name, "\xff\xfe/../%n%s", "a b" };
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        login(argv[1], users[i], 0, 1);
        login(argv[1], users[i], PAM_SILENT, 0);  /* never closed: LeakSanitizer checks pam_end frees all */
    }
    if (failures) {
        fprintf(stderr, "shim test: %d check(s) failed\n", failures);
        return 1;
    }
    printf("shim test: all checks passed under ASan, UBSan and LSan\n");
    return 0;
}
