/* What a test calls (test.h): failure messages, scratch folders, tolerances and running a
 * program under the test's time limit. Runs in the test's child process (tests/main.c). */
#include "tests/test.h"

#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

void test_remove_tree(const char *path)
{
    char cmd[4200];
    if (!path || !path[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

static char tmp_path[4096];

const char *test_tmpdir(void)
{
    const char *base = test_run_dir();
    if (!base || !base[0]) base = getenv("TMPDIR");
    test_tmpdir_remove();
    snprintf(tmp_path, sizeof tmp_path, "%s/strata-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_path)) {
        perror("mkdtemp");
        exit(2);
    }
    return tmp_path;
}

void test_tmpdir_remove(void)
{
    if (tmp_path[0]) test_remove_tree(tmp_path);
    tmp_path[0] = 0;
}

/* The moment a program started by a test is given up on: a little before the test's own
 * deadline, so the report names the program that hung rather than only the test. */
static long long program_deadline_ms(void)
{
    long long deadline = test_deadline_ms(), timeout = test_timeout_ms();
    if (deadline <= 0) return clock_now_ms() + 120 * 1000LL; /* not under the runner */
    long long margin = timeout / 10 < 5000 ? timeout / 10 : 5000;
    return deadline - margin;
}

/* Appends what fd holds now to buf (NUL-terminated, truncated to len; the rest is read and
 * dropped); 1 at end of file, 0 otherwise. */
static int read_some(int fd, char *buf, size_t len, size_t *used)
{
    char sink[4096];
    int room = buf && *used + 1 < len;
    char *dst = room ? buf + *used : sink;
    size_t want = room ? len - 1 - *used : sizeof sink;
    ssize_t got = read(fd, dst, want);
    if (got < 0) return errno != EINTR && errno != EAGAIN;
    if (got == 0) return 1;
    if (room) *used += (size_t)got;
    if (buf && len) buf[*used] = 0;
    return 0;
}

/* Reads errfd to its end and, through pidfd, waits for the program to end (left unreaped),
 * until deadline. Without a pidfd (-1: an old kernel) only errfd is awaited. 0, or -1 when the
 * deadline came first. */
static int drain_and_wait(int pidfd, int errfd, char *err, size_t errlen, long long deadline)
{
    size_t used = 0;
    int err_open = 1, running = 1;
    while (err_open || (running && pidfd >= 0)) {
        struct pollfd fds[2] = {{errfd, POLLIN, 0}, {pidfd, POLLIN, 0}};
        long long left = deadline - clock_now_ms();
        if (left <= 0) return -1;
        int n = poll(fds + !err_open, (nfds_t)(err_open + (running && pidfd >= 0)), (int)left);
        if (n < 0 && errno != EINTR) return -1;
        if (n <= 0) continue;
        if (err_open && fds[0].revents && read_some(errfd, err, errlen, &used)) err_open = 0;
        if (running && pidfd >= 0 && fds[1].revents) running = 0;
    }
    return 0;
}

/* argv as one line, for the report of a program that hung. */
static void join_args(const char *const *argv, char *line, size_t len)
{
    size_t used = 0;
    line[0] = 0;
    for (int i = 0; argv[i] && used + 1 < len; i++)
        used += (size_t)snprintf(line + used, len - used, "%s%s", i ? " " : "", argv[i]);
}

/* Ends err with "timed out: LINE", over the end of what the program wrote if err is full. */
static void append_note(char *err, size_t errlen, const char *line)
{
    char note[1100];
    if (!err || !errlen) return;
    int n = snprintf(note, sizeof note, "%stimed out: %s", err[0] ? "\n" : "", line);
    size_t at = strlen(err), len = n < 0 ? 0 : (size_t)n;
    if (len >= errlen) len = errlen - 1;
    if (at + len >= errlen) at = errlen - 1 - len;
    memcpy(err + at, note, len);
    err[at + len] = 0;
}

/* The child's side of test_run_program: its own process group (so the whole of what it starts
 * can be killed), stdout to outfd, stderr to errfd. */
static void exec_child(const char *const *argv, int outfd, int errfd, pid_t test)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test killed at its limit takes the program along */
    if (getppid() != test) _exit(127);
    setpgid(0, 0);
    dup2(outfd, 1);
    dup2(errfd, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int test_run_program(const char *const *argv, char *err, size_t errlen, char *out, size_t outlen)
{
    int errpipe[2], status = 0;
    if (err && errlen) err[0] = 0;
    if (out && outlen) out[0] = 0;
    /* stdout goes to a temp file so a chatty child cannot block on a full pipe */
    char outfile[] = "/tmp/strata-test-out-XXXXXX";
    int outfd = mkstemp(outfile);
    if (outfd < 0) return -1;
    unlink(outfile);
    if (pipe(errpipe)) {
        close(outfd);
        return -1;
    }
    fflush(NULL);
    pid_t test = getpid(), pid = fork();
    if (pid == 0) exec_child(argv, outfd, errpipe[1], test);
    close(errpipe[1]);
    if (pid < 0) {
        close(errpipe[0]);
        close(outfd);
        return -1;
    }
    setpgid(pid, pid);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int late = drain_and_wait(pidfd, errpipe[0], err, errlen, program_deadline_ms());
    if (!late && pidfd < 0) waitpid(pid, &status, 0); /* no pidfd: its end is awaited here */
    kill(-pid, SIGKILL); /* on time: whatever it left running; late: all of it */
    if (late || pidfd >= 0) waitpid(pid, &status, 0);
    if (pidfd >= 0) close(pidfd);
    close(errpipe[0]);
    if (late) {
        char line[1024];
        join_args(argv, line, sizeof line);
        fprintf(stderr, "    timed out: %s (its process group killed)\n", line);
        append_note(err, errlen, line);
    }
    lseek(outfd, 0, SEEK_SET);
    size_t used = 0;
    while (!read_some(outfd, out, outlen, &used))
        ;
    close(outfd);
    return !late && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int test_run_strata(const char *const *args, char *err, size_t errlen, char *out, size_t outlen)
{
    const char *bin = getenv("STRATA_BIN");
    const char *argv[64];
    int n = 0;
    argv[n++] = bin ? bin : "build/strata";
    for (; args[n - 1] && n < 63; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    return test_run_program(argv, err, errlen, out, outlen);
}

int test_write_pipeline(const char *dir, const char *text, char *path, size_t len)
{
    char cwd[2048];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    snprintf(path, len, "%s/pipe.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (const char *c = text; *c; c++)
        if (c[0] == '@' && c[1] == '/')
            fprintf(f, "%s", cwd);
        else
            fputc(*c, f);
    return fclose(f) == 0 ? 0 : -1;
}
