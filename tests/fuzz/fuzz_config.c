/* Fuzz target config: a model directory's JSON files, config.json (the UNet2DModel settings,
 * unet_config_load) and scheduler_config.json (sched_config_load, with its Python NaN/Infinity
 * rewriting), each given the same bytes. Promises checked: an error has a message; a config
 * accepted has its block counts within the arrays it fills. Both take a path: a memfd. */
#include "kernels/kernels.h"
#include "kernels/unet_config.h"
#include "tests/fuzz/fuzz.h"

#include <unistd.h>

static void check_unet(const char *path)
{
    unet_config c;
    strata_err e = {0};
    if (unet_config_load(path, &c, &e) != 0) {
        if (e.msg[0] == 0) fuzz_fail("config", "config.json: an error without a message");
        return;
    }
    if (c.nblocks < 1 || c.nblocks > UNET_MAX_BLOCKS) fuzz_fail("config", "nblocks out of range");
}

static void check_sched(const char *path)
{
    sched_config c;
    strata_err e = {0};
    if (sched_config_load(path, &c, &e) != 0 && e.msg[0] == 0)
        fuzz_fail("config", "scheduler_config.json: an error without a message");
}

int fuzz_config_one(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    check_unet(path);
    check_sched(path);
    close(fd);
    return 0;
}

FUZZ_TARGET(fuzz_config_one)
