/* What the tests' PAM clients (mtclient.c, pamclient.c) share: a
 * conversation that prints the module's messages, and the session child a
 * login runs (as the user, in the root the calling thread was moved into). */
#include <grp.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    (void)data;
    for (int i = 0; i < n; i++)
        fprintf(stderr, "pam: %s\n", msg[i]->msg);
    *resp = calloc((size_t)n, sizeof(**resp));
    return *resp ? PAM_SUCCESS : PAM_BUF_ERR;
}

/* Runs `sh -c command` as `user` and returns its wait status, or -1. The
 * child exits 102 when it cannot become the user, 103 when sh cannot start. */
static int run_as_user(const char *user, const char *command)
{
    struct passwd *pw = getpwnam(user);
    pid_t pid = fork();
    if (pid == 0) {
        if (!pw || initgroups(pw->pw_name, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
            _exit(102);
        setenv("HOME", pw->pw_dir, 1);
        setenv("PATH", "/bin:/usr/bin", 1);
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(103);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return status;
}
