/* A long-running PAM client, shaped like login: for each cycle it starts a
 * PAM transaction, opens the session, forks and execs COMMAND as the user
 * (unless COMMAND is empty), waits, closes the session and ends the
 * transaction, all in this one process, each cycle on a thread of its own
 * (on btrfs, a thread that opened a session may make no snapshot since). It then prints what the soak test
 * compares, as one JSON line: its open fds and RSS after the first cycle and
 * after the last, and how many cycles failed.
 * Usage: pamclient SERVICE USER CYCLES COMMAND */
#include <dirent.h>
#include <pthread.h>

#include "pamclient.h"

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
    int status = *command ? run_as_user(user, command) : 0;
    rc = pam_close_session(pamh, 0);
    pam_end(pamh, rc);
    if (status != 0) {
        fprintf(stderr, "session command: status %d\n", status);
        return 3;
    }
    return rc == PAM_SUCCESS ? 0 : 4;
}

struct job {
    char **argv;
    int step;
};

static void *run_cycle(void *arg)
{
    struct job *job = arg;
    job->step = cycle(job->argv[1], job->argv[2], job->argv[4]);
    return NULL;
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
        struct job job = { argv, 5 };
        pthread_t thread;
        if (pthread_create(&thread, NULL, run_cycle, &job) == 0)
            pthread_join(thread, NULL);
        int step = job.step;
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
