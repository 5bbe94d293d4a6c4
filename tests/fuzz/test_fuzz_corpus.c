/* The fuzz targets' inputs in the default suite: every file of tests/fuzz/corpus/TARGET (the
 * inputs the fuzzers kept) and tests/fuzz/regressions/TARGET (each input that once crashed a
 * reader, kept after its fix) goes through the target's function, compiled here by the
 * suite's compiler without libFuzzer. A regression comes back as a crash or an abort of this
 * test, which names the input on stderr. */
#include "tests/fuzz/fuzz.h"
#include "tests/test.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    fuzz_fn fn;
} targets[] = {
    {"msg", fuzz_msg_one},           {"job", fuzz_job_one},
    {"pipeline", fuzz_pipeline_one}, {"safetensors", fuzz_safetensors_one},
    {"config", fuzz_config_one},     {"journal", fuzz_journal_one},
    {"png", fuzz_png_one},
};

/* The input being read, for the signal handler to name. */
static char current[512];

static void on_fatal(int sig)
{
    static const char head[] = "fuzz input that failed: ";
    ssize_t k = write(2, head, sizeof head - 1);
    k = write(2, current, strlen(current));
    k = write(2, "\n", 1);
    (void)k;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The whole file at path (malloc'd, *n bytes), or NULL. */
static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            uint8_t *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Every regular file of dir through fn; how many, or -1 when one cannot be read. A missing
 * dir holds none. */
static int replay_dir(const char *dir, fuzz_fn fn)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) && count >= 0) {
        if (de->d_name[0] == '.') continue;
        snprintf(current, sizeof current, "%s/%s", dir, de->d_name);
        size_t n = 0;
        uint8_t *data = read_all(current, &n);
        if (!data) {
            count = -1;
            break;
        }
        fn(data, n);
        free(data);
        count++;
    }
    closedir(d);
    return count;
}

TEST_TIMEOUT(fuzz_corpus_replay, 60)
{
    signal(SIGABRT, on_fatal);
    signal(SIGSEGV, on_fatal);
    signal(SIGBUS, on_fatal);
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", targets[t].name);
        int corpus = replay_dir(dir, targets[t].fn);
        CHECKF(corpus > 0, "%s: no corpus inputs read (%d)", dir, corpus);
        snprintf(dir, sizeof dir, "tests/fuzz/regressions/%s", targets[t].name);
        int regressions = replay_dir(dir, targets[t].fn);
        CHECKF(regressions >= 0, "%s: an input cannot be read", dir);
    }
}
