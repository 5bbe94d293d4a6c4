/* The runner itself (tests/main.c, tests/helpers.c): a test that hangs and one that crashes each
 * fail by name while the rest of the suite runs, a program that hangs is killed with its process
 * group before the test's limit, and a test's scratch folder is its own. */
#include "tests/test.h"

#include "common/common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The line of out that starts with prefix, copied to line (empty when there is none). */
static void find_line(const char *out, const char *prefix, char *line, size_t len)
{
    line[0] = 0;
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) != 0) continue;
        size_t n = strcspn(p, "\n");
        snprintf(line, len, "%.*s", (int)(n < len ? n : len - 1), p);
        return;
    }
}

/* The last non-empty line of out. */
static const char *last_line(char *out)
{
    size_t n = strlen(out);
    while (n && out[n - 1] == '\n')
        out[--n] = 0;
    char *nl = strrchr(out, '\n');
    return nl ? nl + 1 : out;
}

/* An ordinary fast test; the selftest below also runs it. */
TEST(runner_tmpdir_is_fresh_and_empty)
{
    const char *first = test_tmpdir();
    char path[4200], kept[4096];
    snprintf(kept, sizeof kept, "%s", first);
    snprintf(path, sizeof path, "%s/file", kept);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fclose(f);
    const char *second = test_tmpdir();
    struct stat st;
    CHECKF(stat(kept, &st) != 0, "the previous folder %s is still there", kept);
    DIR *d = opendir(second);
    CHECK(d != NULL);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    CHECKF(entries == 0, "%s holds %d entries", second, entries);
}

/* build/tests itself with the selftests on and a 2 s limit: the test that hangs and the one that
 * crashes are each reported failed by name, the ordinary one still passes, the count is right. */
TEST(runner_reports_hang_and_crash_by_name)
{
    static char out[65536], err[65536];
    setenv("STRATA_TEST_SELFTEST", "1", 1); /* this test's own process: nobody else sees it */
    setenv("STRATA_TEST_TIMEOUT", "2", 1);
    const char *argv[] = {"/proc/self/exe", "selftest_", "runner_tmpdir_is_fresh", NULL};
    int rc = test_run_program(argv, err, sizeof err, out, sizeof out);
    CHECKF(rc == 1, "exit %d\n%s%s", rc, out, err);
    char hang[256], crash[256], ok[256];
    find_line(out, "FAIL selftest_hang ", hang, sizeof hang);
    find_line(out, "FAIL selftest_crash ", crash, sizeof crash);
    find_line(out, "ok   runner_tmpdir_is_fresh_and_empty ", ok, sizeof ok);
    CHECKF(strstr(hang, "timed out after 2 s"), "no timeout reported for the hang:\n%s", out);
    CHECKF(crash[0], "no failure reported for the crash:\n%s", out);
    CHECKF(ok[0], "the ordinary test did not pass:\n%s%s", out, err);
    const char *last = last_line(out);
    CHECKF(strcmp(last, "1 passed, 2 failed") == 0, "last line: %s", last);
}

/* 1 while pid exists and is not a zombie (nobody may reap the orphans here: pid 1 need not). */
static int process_alive(int pid)
{
    char path[64], stat[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    const char *state = strrchr(stat, ')'); /* "pid (comm) S ...": comm may hold anything */
    return state && state[1] == ' ' && state[2] != 'Z' && state[2] != 'X';
}

/* A program that never ends, and the child it started in the background, are both killed before
 * the test's own limit (2 s here), and test_run_program says so. */
TEST_TIMEOUT(runner_program_past_the_limit_is_killed_with_its_group, 4)
{
    char out[64], err[512];
    const char *argv[] = {"/bin/sh", "-c", "sleep 100000 & echo $!; wait", NULL};
    long long t0 = clock_now_ms();
    int rc = test_run_program(argv, err, sizeof err, out, sizeof out);
    long long ms = clock_now_ms() - t0;
    CHECKF(rc == -1, "exit %d", rc);
    CHECKF(strstr(err, "timed out: /bin/sh -c"), "err: %s", err);
    CHECKF(ms < test_timeout_ms(), "returned after %lld ms, not before the test's limit", ms);
    int pid = atoi(out);
    CHECKF(pid > 0, "no pid in the program's output: %s", out);
    /* SIGKILL takes effect when the killed process next runs: on a loaded machine that can be
     * a moment after the kill, so wait for it (a bounded poll, 300 ms at most) */
    for (int i = 0; i < 60 && process_alive(pid); i++)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    CHECKF(!process_alive(pid), "its background child %d still runs", pid);
}
