/* The benchmark's PAM client, shaped like login: one process that loads the
 * module through libpam and opens and closes sessions in itself. It prints
 * one JSON object on stdout.
 *
 *   benchclient cycles SERVICE USER N   open_session and close_session
 *                                       latency of N cycles, in ns
 *   benchclient memory SERVICE USER     VmRSS before the first pam_start,
 *                                       with a session open, and after it
 *   benchclient load MODULE             time to dlopen MODULE, in ns (run
 *                                       it in a fresh process each time)
 *
 * Each cycle is pam_start, pam_open_session, pam_close_session, pam_end, as
 * login does it, on a thread of its own (on btrfs a thread that opened a
 * session may make no snapshot since); only the two session calls are timed. */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "../Tests/integration/pamclient.h" /* the tests' conversation */

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
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

/* One login's worth of PAM. `rss_open`, if not NULL, gets VmRSS while the
 * session is open. Returns 0, or the step that failed. */
static int cycle(const char *service, const char *user, long long *open_ns, long long *close_ns, long *rss_open)
{
    struct pam_conv c = { conv, NULL };
    pam_handle_t *pamh = NULL;
    if (pam_start(service, user, &c, &pamh) != PAM_SUCCESS)
        return 1;
    long long t0 = now_ns();
    int rc = pam_open_session(pamh, 0);
    long long t1 = now_ns();
    if (rc != PAM_SUCCESS) {
        fprintf(stderr, "open_session: %s\n", pam_strerror(pamh, rc));
        pam_end(pamh, rc);
        return 2;
    }
    if (rss_open)
        *rss_open = rss_kib();
    long long t2 = now_ns();
    rc = pam_close_session(pamh, 0);
    long long t3 = now_ns();
    pam_end(pamh, rc);
    *open_ns = t1 - t0;
    *close_ns = t3 - t2;
    return rc == PAM_SUCCESS ? 0 : 3;
}

struct job {
    const char *service, *user;
    long long open_ns, close_ns;
    long *rss_open;
    int step;
};

static void *run_cycle(void *arg)
{
    struct job *job = arg;
    job->step = cycle(job->service, job->user, &job->open_ns, &job->close_ns, job->rss_open);
    return NULL;
}

/* cycle() on a new thread. */
static int cycle_on_thread(const char *service, const char *user, long long *open_ns, long long *close_ns,
                           long *rss_open)
{
    struct job job = { service, user, 0, 0, rss_open, 4 };
    pthread_t thread;
    if (pthread_create(&thread, NULL, run_cycle, &job) != 0)
        return 4;
    pthread_join(thread, NULL);
    *open_ns = job.open_ns;
    *close_ns = job.close_ns;
    return job.step;
}

static void print_list(const char *name, const long long *values, long n)
{
    printf("\"%s\": [", name);
    for (long i = 0; i < n; i++)
        printf("%s%lld", i ? ", " : "", values[i]);
    printf("]");
}

static int cycles(const char *service, const char *user, long n)
{
    long long *opens = calloc((size_t)n, sizeof *opens), *closes = calloc((size_t)n, sizeof *closes);
    long done = 0, failed = 0;
    if (!opens || !closes)
        return 2;
    for (long i = 0; i < n; i++) {
        int step = cycle_on_thread(service, user, &opens[done], &closes[done], NULL);
        if (step) {
            failed++;
            fprintf(stderr, "cycle %ld failed at step %d\n", i, step);
        } else {
            done++;
        }
    }
    printf("{\"failed\": %ld, ", failed);
    print_list("open_ns", opens, done);
    printf(", ");
    print_list("close_ns", closes, done);
    printf("}\n");
    return failed ? 1 : 0;
}

static int memory(const char *service, const char *user)
{
    long before = rss_kib(), during = -1;
    long long open_ns, close_ns;
    int step = cycle_on_thread(service, user, &open_ns, &close_ns, &during);
    printf("{\"failed\": %d, \"rss_kib_before\": %ld, \"rss_kib_open\": %ld, \"rss_kib_after\": %ld}\n",
           step != 0, before, during, rss_kib());
    return step ? 1 : 0;
}

static int load(const char *module)
{
    long before = rss_kib();
    long long t0 = now_ns();
    /* How libpam opens a module. */
    void *handle = dlopen(module, RTLD_NOW);
    long long t1 = now_ns();
    if (!handle) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    printf("{\"load_ns\": %lld, \"rss_kib_before\": %ld, \"rss_kib_after\": %ld}\n", t1 - t0, before, rss_kib());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "cycles"))
        return cycles(argv[2], argv[3], atol(argv[4]));
    if (argc == 4 && !strcmp(argv[1], "memory"))
        return memory(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "load"))
        return load(argv[2]);
    fprintf(stderr, "usage: benchclient cycles SERVICE USER N | memory SERVICE USER | load MODULE\n");
    return 2;
}
