/* The test runner: every TEST() in the linked files, sorted by name, or those whose names
 * contain one of the command-line arguments. Each test runs in a forked child, in a process group
 * of its own, under a time limit: a test that hangs, crashes or exits is reported failed by name,
 * its process group is killed, and the suite goes on. The last line is "N passed, N failed". */
#include "tests/test.h"

#include "common/common.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { TEST_MAX = 1024, TEST_DEFAULT_TIMEOUT_S = 120 };

static struct {
    const char *name;
    test_fn fn;
    int timeout_s; /* 0: the default */
} tests[TEST_MAX];
static int test_count;

/* What the running child inherits from the runner: its deadline and the run's scratch folder. */
static long long child_deadline_ms;
static long long child_timeout_ms;
static char run_dir[4096];

void test_register(const char *name, test_fn fn, int timeout_s)
{
    if (test_count == TEST_MAX) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[test_count].name = name;
    tests[test_count].fn = fn;
    tests[test_count].timeout_s = timeout_s;
    test_count++;
}

long long test_deadline_ms(void)
{
    return child_deadline_ms;
}

long long test_timeout_ms(void)
{
    return child_timeout_ms;
}

const char *test_run_dir(void)
{
    return run_dir;
}

/* The limit for test i: STRATA_TEST_TIMEOUT (seconds) when set; else the test's own or the
 * default, times STRATA_TEST_TIMEOUT_SCALE (for slower builds: `make asan` sets it). */
static int timeout_s(int i)
{
    const char *env = getenv("STRATA_TEST_TIMEOUT"), *scale = getenv("STRATA_TEST_TIMEOUT_SCALE");
    if (env && atoi(env) > 0) return atoi(env);
    int s = tests[i].timeout_s > 0 ? tests[i].timeout_s : TEST_DEFAULT_TIMEOUT_S;
    return scale && atoi(scale) > 1 ? s * atoi(scale) : s;
}

/* The runner's thread count (from /proc), or -1 when it cannot be read. */
static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

/* In the child: run the test alone in its own process group and exit 0 (passed) or 1 (failed).
 * exit(), not _exit(): LeakSanitizer checks this test's allocations at exit under `make asan`. */
static void run_child(int i, pid_t runner)
{
    /* a runner killed from outside takes its test along, rather than leaving it hung */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != runner) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the runner's blocked signals are its own */
    setpgid(0, 0);
    int fail = 0;
    tests[i].fn(&fail);
    test_tmpdir_remove();
    fflush(NULL);
    exit(fail ? 1 : 0);
}

/* Waits until pid has ended (left unreaped) or the deadline; 0 or -1 on timeout. SIGCHLD (and the
 * runner's SIGINT and SIGTERM) are blocked, so none arriving between the two calls is lost. On
 * SIGINT or SIGTERM the test's process group is killed and the runner ends with that signal. */
static int wait_until(pid_t pid, long long deadline)
{
    sigset_t waited;
    sigemptyset(&waited);
    sigaddset(&waited, SIGCHLD);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGTERM);
    for (;;) {
        siginfo_t info = {0}; /* WNOWAIT: the child stays unreaped, so its group id stays its */
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid)
            return 0;
        long long left = deadline - clock_now_ms();
        if (left <= 0) return -1;
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        int sig = sigtimedwait(&waited, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            kill(-pid, SIGKILL);
            waitpid(pid, NULL, 0);
            test_remove_tree(run_dir);
            signal(sig, SIG_DFL);
            sigprocmask(SIG_UNBLOCK, &waited, NULL);
            raise(sig);
        }
    }
}

/* Runs test i in a forked child; prints its verdict line and returns 1 when it passed. */
static int run_test(int i)
{
    int limit_s = timeout_s(i), threads = thread_count();
    if (threads > 1) {
        /* libgomp and OpenBLAS are not fork-safe: a child could hang and read as a timeout */
        fprintf(stderr,
                "tests: the runner has %d threads before forking %s; nothing may start "
                "threads (OpenMP, OpenBLAS) outside a test\n",
                threads, tests[i].name);
        test_remove_tree(run_dir);
        exit(2);
    }
    long long t0 = clock_now_ms();
    child_timeout_ms = limit_s * 1000LL;
    child_deadline_ms = t0 + child_timeout_ms;
    fflush(NULL); /* or the child would print the runner's buffered output again */
    pid_t runner = getpid(), pid = fork();
    if (pid < 0) {
        perror("fork");
        test_remove_tree(run_dir);
        exit(2);
    }
    if (pid == 0) run_child(i, runner);
    setpgid(pid, pid); /* also here: the group must exist before a kill can name it */
    int status = 0, timed_out = wait_until(pid, child_deadline_ms) != 0;
    kill(-pid, SIGKILL); /* the test if it hangs, and whatever it started and left running */
    waitpid(pid, &status, 0);
    double ms = (double)(clock_now_ms() - t0);
    int passed = !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("%s %s (%.0f ms", passed ? "ok  " : "FAIL", tests[i].name, ms);
    if (timed_out)
        printf(", timed out after %d s", limit_s);
    else if (WIFSIGNALED(status))
        printf(", killed by signal %d: %s", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) > 1)
        printf(", exit status %d", WEXITSTATUS(status));
    printf(")\n");
    fflush(stdout);
    return passed;
}

static void test_selftest_hang(int *test_failed_)
{
    (void)test_failed_;
    for (;;)
        pause();
}

static void test_selftest_crash(int *test_failed_)
{
    (void)test_failed_;
    raise(SIGSEGV);
}

/* Under STRATA_TEST_SELFTEST=1 the runner also holds a test that hangs and one that crashes,
 * for tests/test_runner.c to check that each fails by name while the others run. */
static void register_selftests(void)
{
    const char *on = getenv("STRATA_TEST_SELFTEST");
    if (!on || strcmp(on, "1") != 0) return;
    test_register("selftest_hang", test_selftest_hang, 0);
    test_register("selftest_crash", test_selftest_crash, 0);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i])) return 1;
    return 0;
}

/* A scratch folder for the whole run, under $TMPDIR; test_tmpdir() makes each test's inside it,
 * and the runner removes it at the end, whatever the tests did. */
static void make_run_dir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(run_dir, sizeof run_dir, "%s/strata-tests-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(run_dir)) {
        perror("mkdtemp");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    /* OpenBLAS stays single-threaded in strata (kernels_set_threads); with more than one thread
     * it would start its threads at load, here in the runner, before any fork. */
    const char *blas_threads = getenv("OPENBLAS_NUM_THREADS");
    if (blas_threads && strcmp(blas_threads, "1") != 0) unsetenv("OPENBLAS_NUM_THREADS");
    kernels_setup_blas(argv); /* the same kernels as the build/strata it starts */
    register_selftests();
    qsort(tests, (size_t)test_count, sizeof tests[0], by_name);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    make_run_dir();
    for (int i = 0; i < test_count; i++) {
        if (!selected(tests[i].name, argc, argv)) continue;
        run_test(i) ? passed++ : failed++;
    }
    test_remove_tree(run_dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
