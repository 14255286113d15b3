/* A long-running PAM client, shaped like login: for each cycle it starts a
 * PAM transaction, opens the session, forks and execs COMMAND as the user
 * (unless COMMAND is empty), waits, closes the session and ends the
 * transaction, all in this one process. It then prints what the soak test
 * compares, as one JSON line: its open fds and RSS after the first cycle and
 * after the last, and how many cycles failed.
 * Usage: pamclient SERVICE USER CYCLES COMMAND */
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int open_fds(void)
{
    int n = 0;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return -1;
    for (struct dirent *e; (e = readdir(dir));)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1; /* the directory's own fd */
}

static long rss_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* 0 on success, else the step that failed. */
static int cycle(const char *service, const char *user, const char *command)
{
    struct pam_conv c = { conv, NULL };
    pam_handle_t *pamh = NULL;
    if (pam_start(service, user, &c, &pamh) != PAM_SUCCESS)
        return 1;
    int rc = pam_open_session(pamh, 0);
    if (rc != PAM_SUCCESS) {
        fprintf(stderr, "open_session: %s\n", pam_strerror(pamh, rc));
        pam_end(pamh, rc);
        return 2;
    }
    int status = 0;
    if (*command) {
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
        if (pid < 0 || waitpid(pid, &status, 0) != pid)
            status = -1;
    }
    rc = pam_close_session(pamh, 0);
    pam_end(pamh, rc);
    if (status != 0) {
        fprintf(stderr, "session command: status %d\n", status);
        return 3;
    }
    return rc == PAM_SUCCESS ? 0 : 4;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: pamclient SERVICE USER CYCLES COMMAND\n");
        return 2;
    }
    long cycles = atol(argv[3]);
    long failed = 0;
    int fds_first = -1;
    long rss_first = -1;
    for (long i = 0; i < cycles; i++) {
        int step = cycle(argv[1], argv[2], argv[4]);
        if (step) {
            failed++;
            fprintf(stderr, "cycle %ld failed at step %d\n", i, step);
        }
        if (i == 0) {
            fds_first = open_fds();
            rss_first = rss_kib();
        }
    }
    printf("{\"cycles\": %ld, \"failed\": %ld, \"fds_first\": %d, \"fds_last\": %d, "
           "\"rss_kib_first\": %ld, \"rss_kib_last\": %ld}\n",
           cycles, failed, fds_first, open_fds(), rss_first, rss_kib());
    return failed ? 1 : 0;
}
