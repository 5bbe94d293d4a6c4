/* A small test harness: TEST(name) registers a test, CHECK fails it with file and line.
 * build/tests runs every test (or those whose names contain one of its arguments), each in a
 * forked child under a time limit (TEST_TIMEOUT, STRATA_TEST_TIMEOUT), and ends with the line
 * "N passed, N failed". Tests run from the repository root. */
#ifndef STRATA_TEST_H
#define STRATA_TEST_H

#include <stddef.h>
#include <sys/types.h>

typedef void (*test_fn)(int *test_failed_);
void test_register(const char *name, test_fn fn, int timeout_s);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A test with the default time limit (120 s). */
#define TEST(name) TEST_TIMEOUT(name, 0)

/* A test that may run for up to `seconds` (0: the default). In the environment,
 * STRATA_TEST_TIMEOUT=seconds sets every test's limit instead, STRATA_TEST_TIMEOUT_SCALE=n
 * multiplies each test's own (`make asan`: 3). A test past its limit is killed, with every
 * process of its group, and reported failed. */
#define TEST_TIMEOUT(name, seconds)                                                                \
    static void test_##name(int *test_failed_);                                                    \
    __attribute__((constructor)) static void test_register_##name(void)                            \
    {                                                                                              \
        test_register(#name, test_##name, seconds);                                                \
    }                                                                                              \
    static void test_##name(int *test_failed_)

/* Fail the test and return from it when cond is false. */
#define CHECK(cond) CHECKF(cond, "%s", #cond)
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                                            \
            *test_failed_ = 1;                                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* 1 under STRATA_TEST_QUICK=1 (`make asan QUICK=1`, for a fast local run): slow tests shrink
 * their work. */
int test_quick(void);

/* Run the program argv[0] (a path) with argv, in a process group of its own; returns its exit
 * code (127: it could not be started), or -1 when it died of a signal or ran past the test's time
 * limit (a little before it: then its whole process group is killed and err ends with "timed
 * out: ARGV"). Its stderr and stdout come back truncated to the buffer sizes, NUL-terminated;
 * either buffer may be NULL. */
int test_run_program(const char *const *argv, char *err, size_t errlen, char *out, size_t outlen);

/* test_run_program for build/strata (STRATA_BIN) with args. */
int test_run_strata(const char *const *args, char *err, size_t errlen, char *out, size_t outlen);

/* A fresh empty directory for this test inside the run's scratch folder; the path lives until
 * the next call. The runner removes it when the test ends. */
const char *test_tmpdir(void);

/* Write DIR/pipe.yaml from text, "@/" standing for the repository root (the tests' working
 * directory), so a pipeline written elsewhere finds the fixture models. Its path goes to path.
 * 0, or -1 when it cannot be written. */
int test_write_pipeline(const char *dir, const char *text, char *path, size_t len);

/* For tests that start farms (farm_helpers.c): build/strata or $STRATA_BIN; argv[0] started
 * with stdout on out_fd (-1: the test's) and stderr appended to err_path (NULL: the test's),
 * its pid (-1 when fork failed; it exits 127 when argv[0] cannot run); a file's bytes,
 * NUL-terminated, into *data (freed by the caller) and its length, or -1; whether a file
 * holds what; test-tiny with a slow first level (l16 in `steps` steps; 40: about 0.25 s a task), so
 * a job is still running when a test hits it (0 or -1). */
const char *test_strata_bin(void);
pid_t test_spawn(char *const *argv, int out_fd, const char *err_path);
long test_file_read(const char *path, char **data);
/* One line (with its '\n') from fd into line, each byte within timeout_ms (a coordinator's start
 * line): 0, or -1 when none came whole (line holds what did). */
int test_read_line(int fd, char *line, size_t len, int timeout_ms);
int test_file_mentions(const char *path, const char *what);
int test_write_slow_pipeline(const char *path, int steps);

/* Maximum of |a - b| and of |b| over n floats. */
void test_max_abs_diff(const float *a, const float *b, size_t n, float *maxdiff, float *maxref);

/* For the runner and the helpers: the running test's deadline and limit (clock_now_ms, 0 when
 * not under the runner), the run's scratch folder, and removing folders. */
long long test_deadline_ms(void);
long long test_timeout_ms(void);
const char *test_run_dir(void);
void test_tmpdir_remove(void);
void test_remove_tree(const char *path);

#endif
