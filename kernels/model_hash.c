/* model_hash_dir: the SHA-256 a worker's HELLO carries and the coordinator compares, so a
 * level is never served by two different models (docs/design.md section 5). */
#include "kernels/kernels.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Add one file to the hash as role NUL size bytes. 0, 1 when it is absent and optional, or
 * ERR_INPUT. */
static int hash_file(crypto_hash_sha256_state *st, const char *role, const char *path, int optional,
                     strata_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f && optional && errno == ENOENT) return 1;
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) != 0) {
        if (f) fclose(f);
        return err_set(e, ERR_INPUT, "%s: %s", path, strerror(errno));
    }
    uint8_t size[8];
    for (int i = 0; i < 8; i++)
        size[i] = (uint8_t)((uint64_t)sb.st_size >> (8 * i));
    crypto_hash_sha256_update(st, (const uint8_t *)role, strlen(role) + 1);
    crypto_hash_sha256_update(st, size, sizeof size);
    static __thread uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        crypto_hash_sha256_update(st, buf, n);
    int bad = ferror(f);
    fclose(f);
    return bad ? err_set(e, ERR_INPUT, "%s: read error", path) : 0;
}

int model_hash_dir(const char *dir, char out[MODEL_HASH_HEX + 1], strata_err *e)
{
    static const char *const sched[] = {"%s/scheduler_config.json",
                                        "%s/scheduler/scheduler_config.json",
                                        "%s/../scheduler/scheduler_config.json"};
    if (sodium_init() < 0) return err_set(e, ERR_RUNTIME, "libsodium did not start");
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = hash_file(&st, "config.json", path, 0, e);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!rc) rc = hash_file(&st, "diffusion_pytorch_model.safetensors", path, 0, e);
    for (size_t i = 0; !rc && i < sizeof sched / sizeof sched[0]; i++) {
        snprintf(path, sizeof path, sched[i], dir);
        rc = hash_file(&st, "scheduler_config.json", path, 1, e);
        if (rc == 0) break;
        if (rc == 1) rc = 0;
    }
    if (rc < 0) return rc;
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, MODEL_HASH_HEX + 1, h, sizeof h);
    return 0;
}
