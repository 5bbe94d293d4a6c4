/* Fuzz target safetensors: a model file's bytes through st_open (the header: length, JSON,
 * every tensor's dtype, shape and offsets checked against the data), then what the model loader
 * does with a tensor: find it by name and convert it to float32. Promises checked: an error
 * has a message; every tensor of an open file lies inside the data and holds exactly its
 * shape's bytes. st_open takes a path: the bytes are in a memfd. */
#include "kernels/kernels.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <unistd.h>

/* Tensors of more elements are checked but not converted (time, not correctness). */
enum { FUZZ_ST_CONVERT_MAX = 1 << 16 };

static void check_tensor(const st_file_t *f, const st_tensor *t)
{
    if (st_find(f, t->name) != t) fuzz_fail("safetensors", "st_find misses a tensor");
    int64_t n = st_numel(t);
    if (n < 0 || t->ndim < 0 || t->ndim > ST_MAX_DIMS) fuzz_fail("safetensors", "bad shape");
    if (t->dtype == ST_DTYPE_OTHER || n > FUZZ_ST_CONVERT_MAX) return;
    size_t elem = t->dtype == ST_DTYPE_F16 || t->dtype == ST_DTYPE_BF16  ? 2
                  : t->dtype == ST_DTYPE_F64 || t->dtype == ST_DTYPE_I64 ? 8
                                                                         : 4;
    if ((uint64_t)n * elem != t->nbytes) fuzz_fail("safetensors", "bytes do not match the shape");
    float *dst = malloc((size_t)n * sizeof *dst + 1);
    if (!dst) return;
    st_to_f32(t, dst); /* reads all nbytes of the mapping: ASan sees any overrun */
    free(dst);
}

int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    st_file_t *f = NULL;
    strata_err e = {0};
    if (st_open(path, &f, &e) != 0) {
        if (e.msg[0] == 0) fuzz_fail("safetensors", "an error without a message");
    } else {
        for (int i = 0; i < st_count(f); i++)
            check_tensor(f, st_at(f, i));
        st_close(f);
    }
    close(fd);
    return 0;
}

FUZZ_TARGET(fuzz_safetensors_one)
