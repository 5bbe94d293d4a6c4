/* common/: the error value, the clock and the atomic write. */
#include "common/common.h"
#include "tests/test.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

TEST(common_err_set_fills_and_maps_exit_codes)
{
    strata_err e = {0};
    CHECK(err_set(&e, ERR_INPUT, "%s: %d", "x.yaml", 7) == ERR_INPUT);
    CHECK(e.code == ERR_INPUT && !strcmp(e.msg, "x.yaml: 7"));
    CHECK(err_set(NULL, ERR_IO, "ignored") == ERR_IO);
    CHECK(err_exit_code(ERR_OK) == 0 && err_exit_code(ERR_INPUT) == 2);
    CHECK(err_exit_code(ERR_RUNTIME) == 1 && err_exit_code(ERR_FRAME) == 1);
    for (int c = ERR_OK; c >= ERR_ARG; c--)
        CHECKF(strcmp(err_name(c), "unknown error") != 0, "code %d has no name", c);
}

TEST(common_clock_is_monotonic)
{
    long long a = clock_now_ms();
    double s = clock_now_s();
    CHECK(clock_now_ms() >= a && clock_now_s() >= s);
    CHECK(s * 1000.0 >= (double)a - 1.0);
}

/* Count the entries of dir other than . and .. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (d) closedir(d);
    return n;
}

TEST(common_file_write_atomic_replaces_and_leaves_no_temp)
{
    const char *dir = test_tmpdir();
    char path[1024], got[32] = {0};
    snprintf(path, sizeof path, "%s/out.txt", dir);
    strata_err e = {0};
    struct iovec two[2] = {{"ab", 2}, {"cd", 2}};
    CHECKF(file_write_atomic(path, two, 2, 1, &e) == 0, "%s", e.msg);
    CHECKF(file_write_atomic(path, &(struct iovec){"xyz", 3}, 1, 0, &e) == 0, "%s", e.msg);
    FILE *f = fopen(path, "rb");
    CHECK(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    CHECKF(n == 3 && !strcmp(got, "xyz"), "read %zu bytes '%s'", n, got);
    CHECK(entries(dir) == 1);
    snprintf(path, sizeof path, "%s/missing/out.txt", dir);
    CHECK(file_write_atomic(path, two, 1, 0, &e) == ERR_RUNTIME && strstr(e.msg, "missing"));
}
