/* A multithreaded PAM client shaped like gdm's session worker: busy threads
 * run while one thread opens the session, forks and execs the session child,
 * waits for it, and closes the session (after dropping root when
 * MTCLIENT_CLOSE_UNPRIVILEGED is set, as systemd's user manager does).
 * Usage: mtclient SERVICE USER COMMAND */
#include <pthread.h>

#include "pamclient.h"

static volatile int stop;

static void *busy(void *arg)
{
    (void)arg;
    unsigned long n = 0;
    while (!stop) {
        char *p = malloc(64 + (n++ % 4096));
        free(p);
        usleep(100);
    }
    return NULL;
}

struct job { const char *service, *user, *command; int status; };

static void *session(void *arg)
{
    struct job *job = arg;
    struct pam_conv c = { conv, NULL };
    pam_handle_t *pamh = NULL;
    job->status = 100;
    if (pam_start(job->service, job->user, &c, &pamh) != PAM_SUCCESS)
        return NULL;
    int rc = pam_open_session(pamh, 0);
    if (rc != PAM_SUCCESS) {
        fprintf(stderr, "open_session: %s\n", pam_strerror(pamh, rc));
        pam_end(pamh, rc);
        job->status = 101;
        return NULL;
    }
    int status = run_as_user(job->user, job->command);
    struct passwd *pw = getpwnam(job->user);
    /* systemd's user manager closes its PAM session after dropping root. */
    if (getenv("MTCLIENT_CLOSE_UNPRIVILEGED") && pw && (setgid(pw->pw_gid) || setuid(pw->pw_uid)))
        job->status = 106;
    rc = pam_close_session(pamh, 0);
    pam_end(pamh, rc);
    if (job->status == 106)
        return NULL;
    job->status = WIFEXITED(status) ? WEXITSTATUS(status) : 104;
    if (rc != PAM_SUCCESS)
        job->status = 105;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: mtclient SERVICE USER COMMAND\n");
        return 2;
    }
    pthread_t workers[4], worker;
    for (int i = 0; i < 4; i++)
        pthread_create(&workers[i], NULL, busy, NULL);
    struct job job = { argv[1], argv[2], argv[3], 0 };
    pthread_create(&worker, NULL, session, &job);
    pthread_join(worker, NULL);
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(workers[i], NULL);
    return job.status;
}
