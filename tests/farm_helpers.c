/* What the tests that start farms share (test.h): the binary, starting a process with its
 * output where the test reads it, a file's bytes and words, and the slow pipeline. */
#include "tests/test.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *test_strata_bin(void)
{
    const char *b = getenv("STRATA_BIN");
    return b && *b ? b : "build/strata";
}

pid_t test_spawn(char *const *argv, int out_fd, const char *err_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd >= 0) dup2(out_fd, 1);
        FILE *f = err_path ? fopen(err_path, "a") : NULL;
        if (f) dup2(fileno(f), 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int test_read_line(int fd, char *line, size_t len, int timeout_ms)
{
    size_t used = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (used + 1 < len && poll(&p, 1, timeout_ms) > 0 && read(fd, line + used, 1) == 1)
        if (line[used++] == '\n') {
            line[used] = 0;
            return 0;
        }
    line[used < len ? used : len - 1] = 0;
    return -1;
}

long test_file_read(const char *path, char **data)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    *data = n >= 0 && !fseek(f, 0, SEEK_SET) ? malloc((size_t)n + 1) : NULL;
    if (!*data || fread(*data, 1, (size_t)n, f) != (size_t)n) n = -1;
    fclose(f);
    if (n >= 0) (*data)[n] = 0;
    if (n < 0) free(*data), *data = NULL;
    return n;
}

int test_file_mentions(const char *path, const char *what)
{
    char *text;
    if (test_file_read(path, &text) < 0) return 0;
    int found = strstr(text, what) != NULL;
    free(text);
    return found;
}

int test_write_slow_pipeline(const char *path, int steps)
{
    char cwd[1024];
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    if (!getcwd(cwd, sizeof cwd)) {
        fclose(f);
        return -1;
    }
    fprintf(f,
            "name: slow\nlevels:\n"
            "  - {name: l16, kind: generate, side: 16, steps: %d,\n"
            "     model: %s/tests/fixtures/unet/small3/model}\n"
            "  - {name: l32, kind: refine, side: 32, steps: 3, noise_level: 50,\n"
            "     model: %s/tests/fixtures/unet/sr/model}\n",
            steps, cwd, cwd);
    return fclose(f);
}
