/* Fuzz target png: an init image (a job's init_images/NNNNNN.png, read by the coordinator for
 * a job that starts at a refine level) through png_read_rgb (libpng, any colour type and depth
 * converted to 8-bit RGB). Promises checked: an error has a message and returns no pixels; an
 * image read has a positive size and w * h * 3 readable bytes. png_read_rgb takes a path: a
 * memfd. */
#include "kernels/kernels.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <unistd.h>

int fuzz_png_one(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    strata_err e = {0};
    if (png_read_rgb(path, &rgb, &w, &h, &e) != 0) {
        if (e.msg[0] == 0) fuzz_fail("png", "an error without a message");
        if (rgb) fuzz_fail("png", "pixels returned with an error");
    } else {
        if (w < 1 || h < 1) fuzz_fail("png", "an empty image read");
        unsigned sum = 0; /* every byte of the image is there to read (ASan checks) */
        for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++)
            sum += rgb[i];
        (void)sum;
        free(rgb);
    }
    close(fd);
    return 0;
}

FUZZ_TARGET(fuzz_png_one)
