/* Fuzz target journal: a state directory's journal file through coord_journal_read, as a
 * restarting coordinator replays it (coordinator/restore.c). Each input is read twice: as it
 * is, and with every record's checksum made right, so that the fuzzer's records reach the
 * payload decoder instead of stopping at the crc32 (a torn or damaged file is the first case, a
 * file written by a buggy or hostile writer the second). Promises checked: the intact part and
 * the dropped bytes add up to the file, and each record's strings are terminated within it. */
#include "coordinator/journal.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

enum { FUZZ_MAGIC_LEN = 8, FUZZ_REC_HEAD = 8 };

/* restore.c's callback keeps job and text: read every byte of both, as it may. */
static int on_record(void *ctx, const coord_rec *r)
{
    uint64_t *sum = ctx;
    size_t joblen = strlen(r->job);
    for (size_t i = 0; i < joblen; i++)
        *sum += (unsigned char)r->job[i];
    for (uint32_t i = 0; i < r->textlen; i++)
        *sum += (unsigned char)r->text[i];
    if (r->text[r->textlen] != 0) fuzz_fail("journal", "text not terminated");
    return 0;
}

static void read_one(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return;
    uint64_t end = 0, dropped = 0, sum = 0;
    strata_err e = {0};
    int rc = coord_journal_read(path, on_record, &sum, &end, &dropped, &e);
    if (rc != 0 && e.msg[0] == 0) fuzz_fail("journal", "an error without a message");
    if (rc == 0 && end + dropped != size) fuzz_fail("journal", "intact + dropped != file size");
    close(fd);
}

/* data with the crc32 of each record that fits made right (a malloc'd copy), or NULL. */
static uint8_t *fix_crcs(const uint8_t *data, size_t size)
{
    uint8_t *d = malloc(size ? size : 1);
    if (!d) return NULL;
    memcpy(d, data, size);
    for (size_t at = FUZZ_MAGIC_LEN; at + FUZZ_REC_HEAD <= size;) {
        uint32_t len = (uint32_t)d[at] | (uint32_t)d[at + 1] << 8 | (uint32_t)d[at + 2] << 16 |
                       (uint32_t)d[at + 3] << 24;
        if (len > size - at - FUZZ_REC_HEAD) break;
        uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), d + at + FUZZ_REC_HEAD, (uInt)len);
        for (int i = 0; i < 4; i++)
            d[at + 4 + i] = (uint8_t)(crc >> (8 * i));
        at += FUZZ_REC_HEAD + len;
    }
    return d;
}

int fuzz_journal_one(const uint8_t *data, size_t size)
{
    read_one(data, size);
    uint8_t *fixed = fix_crcs(data, size);
    if (fixed) read_one(fixed, size);
    free(fixed);
    return 0;
}

FUZZ_TARGET(fuzz_journal_one)
