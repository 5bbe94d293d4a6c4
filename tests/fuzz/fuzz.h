/* The fuzz targets (tests/fuzz/fuzz_*.c): each feeds bytes to one product reader of outside
 * input and aborts when that reader breaks a promise its header makes (a crash, a leak or an
 * undefined behaviour is caught by the sanitizers of `make fuzz`). libFuzzer calls a target
 * through LLVMFuzzerTestOneInput; the suite calls every one of them on every committed corpus and
 * regression input (tests/fuzz/test_fuzz_corpus.c). No target keeps state between inputs. */
#ifndef STRATA_TESTS_FUZZ_H
#define STRATA_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* One input through one reader; 0 always (libFuzzer's convention: every input is usable). */
typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

int fuzz_msg_one(const uint8_t *data, size_t size);
int fuzz_job_one(const uint8_t *data, size_t size);
int fuzz_pipeline_one(const uint8_t *data, size_t size);
int fuzz_safetensors_one(const uint8_t *data, size_t size);
int fuzz_config_one(const uint8_t *data, size_t size);
int fuzz_journal_one(const uint8_t *data, size_t size);
int fuzz_png_one(const uint8_t *data, size_t size);

/* A memfd holding data (a reader that takes only a path opens path: "/proc/self/fd/N"). The fd,
 * or -1 when it cannot be made; close it when done. */
int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t pathlen);

/* Abort with a message: a property of the reader failed (libFuzzer saves the input). */
void fuzz_fail(const char *target, const char *what) __attribute__((noreturn));

/* The libFuzzer entry of a target, built only by `make fuzz` (-DSTRATA_LIBFUZZER). */
#ifdef STRATA_LIBFUZZER
#define FUZZ_TARGET(fn)                                                                            \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                  \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                                   \
    {                                                                                              \
        return fn(data, size);                                                                     \
    }
#else
#define FUZZ_TARGET(fn)
#endif

#endif
