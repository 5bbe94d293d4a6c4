/* The test runner: every TEST() in the linked files, sorted by name, or those whose names
 * contain one of the command-line arguments. */
#include "tests/test.h"

#include "kernels/kernels.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { TEST_MAX = 1024 };

static struct {
    const char *name;
    test_fn fn;
} tests[TEST_MAX];
static int test_count;

void test_register(const char *name, test_fn fn)
{
    if (test_count == TEST_MAX) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[test_count].name = name;
    tests[test_count].fn = fn;
    test_count++;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int test_quick(void)
{
    const char *q = getenv("STRATA_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

void test_max_abs_diff(const float *a, const float *b, size_t n, float *maxdiff, float *maxref)
{
    float d = 0, r = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        float x = fabsf(a[i] - b[i]);
        nan |= x != x;
        if (x > d) d = x;
        if (fabsf(b[i]) > r) r = fabsf(b[i]);
    }
    *maxdiff = nan ? NAN : d; /* any NaN fails every tolerance */
    *maxref = r;
}

static char tmp_path[4096];

static void remove_tree(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

const char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    if (tmp_path[0]) remove_tree(tmp_path);
    snprintf(tmp_path, sizeof tmp_path, "%s/strata-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmp_path)) {
        perror("mkdtemp");
        exit(2);
    }
    return tmp_path;
}

static void read_all(int fd, char *buf, size_t len)
{
    size_t used = 0;
    char sink[4096];
    for (;;) {
        char *dst = buf && used + 1 < len ? buf + used : sink;
        size_t room = buf && used + 1 < len ? len - 1 - used : sizeof sink;
        ssize_t got = read(fd, dst, room);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        if (dst != sink) used += (size_t)got;
    }
    if (buf && len) buf[used] = 0;
}

int test_run_strata(const char *const *args, char *err, size_t errlen, char *out, size_t outlen)
{
    const char *bin = getenv("STRATA_BIN");
    const char *argv[64];
    int n = 0, errpipe[2], outpipe[2], status;
    argv[n++] = bin ? bin : "build/strata";
    for (; args[n - 1] && n < 63; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    if (pipe(errpipe) || pipe(outpipe)) return -1;
    /* stdout goes to a temp file so a chatty child cannot block on a full pipe */
    char outfile[] = "/tmp/strata-test-out-XXXXXX";
    int outfd = mkstemp(outfile);
    if (outfd < 0) return -1;
    unlink(outfile);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(outfd, 1);
        dup2(errpipe[1], 2);
        close(errpipe[0]);
        close(outpipe[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(errpipe[1]);
    close(outpipe[0]);
    close(outpipe[1]);
    read_all(errpipe[0], err, errlen);
    close(errpipe[0]);
    if (waitpid(pid, &status, 0) < 0) return -1;
    lseek(outfd, 0, SEEK_SET);
    read_all(outfd, out, outlen);
    close(outfd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    kernels_setup_blas(argv); /* the same kernels as the build/strata it starts */
    qsort(tests, (size_t)test_count, sizeof tests[0], by_name);
    for (int i = 0; i < test_count; i++) {
        if (!selected(tests[i].name, argc, argv)) continue;
        int fail = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn(&fail);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("%s %s (%.0f ms)\n", fail ? "FAIL" : "ok  ", tests[i].name, ms);
        fflush(stdout);
        fail ? failed++ : passed++;
    }
    if (tmp_path[0]) remove_tree(tmp_path);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
