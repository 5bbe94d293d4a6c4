/* A small test harness: TEST(name) registers a test, CHECK fails it with file and line.
 * build/tests runs every test (or those whose names contain argv[1]) and ends with the line
 * "N passed, N failed". Tests run from the repository root. */
#ifndef STRATA_TEST_H
#define STRATA_TEST_H

#include <stddef.h>

typedef void (*test_fn)(int *test_failed_);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                                                 \
    static void test_##name(int *test_failed_);                                                    \
    __attribute__((constructor)) static void test_register_##name(void)                            \
    {                                                                                              \
        test_register(#name, test_##name);                                                         \
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

/* 1 under `make asan` (STRATA_TEST_QUICK=1): slow tests shrink their work. */
int test_quick(void);

/* Run build/strata (STRATA_BIN) with args; returns its exit code (or -1), and its stderr and
 * stdout (truncated to the buffer sizes, NUL-terminated; either buffer may be NULL). */
int test_run_strata(const char *const *args, char *err, size_t errlen, char *out, size_t outlen);

/* A fresh empty directory under $TMPDIR for this test; the path lives until the next call. */
const char *test_tmpdir(void);

/* Maximum of |a - b| and of |b| over n floats. */
void test_max_abs_diff(const float *a, const float *b, size_t n, float *maxdiff, float *maxref);

#endif
