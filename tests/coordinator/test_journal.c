/* The journal and the spool of a state directory, as leaves: records come back as written; a
 * torn last record (the file cut inside it) is detected and dropped, and appending goes on
 * after the last intact one; a damaged byte in a record ends the reading there; spooled bytes
 * come back checked, and a segment holding nothing live is deleted. */
#include "coordinator/journal.h"
#include "coordinator/spool.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct seen {
    int n;
    char jobs[16][64];
    char texts[16][64];
    uint32_t images[16];
    coord_spool_ref refs[16];
} seen;

static int collect(void *ctx, const coord_rec *r)
{
    seen *s = ctx;
    if (s->n == 16) return -1;
    snprintf(s->jobs[s->n], sizeof s->jobs[0], "%s", r->job);
    snprintf(s->texts[s->n], sizeof s->texts[0], "%s", r->text);
    s->images[s->n] = r->image;
    s->refs[s->n] = r->ref;
    s->n++;
    return 0;
}

/* Records 0..n-1 of a job "j" appended to path and synced. */
static int write_records(const char *path, uint64_t end, int first, int n)
{
    coord_journal_t *j;
    strata_err e = {0};
    if (coord_journal_open(path, end, &j, &e) < 0) return -1;
    for (int i = first; i < first + n; i++) {
        char text[32];
        snprintf(text, sizeof text, "reason %d", i);
        coord_rec r = {.type = COORD_REC_IMAGE,
                       .job = "j",
                       .image = (uint32_t)i,
                       .text = text,
                       .textlen = (uint32_t)strlen(text)};
        if (coord_journal_append(j, &r) < 0) return -1;
    }
    int rc = coord_journal_sync(j, &e);
    coord_journal_close(&j);
    return rc;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

TEST(journal_torn_last_record_dropped)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/journal", test_tmpdir());
    CHECK(write_records(path, 0, 0, 3) == 0);
    long full = file_size(path);
    CHECK(full > 8);
    /* cut the file 5 bytes into its last record's payload's end: torn */
    CHECK(truncate(path, full - 5) == 0);
    seen s = {0};
    uint64_t end = 0, dropped = 0;
    strata_err e = {0};
    CHECKF(coord_journal_read(path, collect, &s, &end, &dropped, &e) == 0, "%s", e.msg);
    CHECKF(s.n == 2, "%d records read from a torn journal of 3", s.n);
    CHECK(!strcmp(s.jobs[1], "j") && !strcmp(s.texts[1], "reason 1") && s.images[1] == 1);
    CHECK(dropped > 0 && (long)(end + dropped) == full - 5);
    /* appending goes on after the last intact record: the torn bytes are gone */
    CHECK(write_records(path, end, 10, 1) == 0);
    memset(&s, 0, sizeof s);
    CHECK(coord_journal_read(path, collect, &s, &end, &dropped, &e) == 0);
    CHECKF(s.n == 3 && s.images[2] == 10 && dropped == 0, "%d records, the last image %u", s.n,
           s.images[2]);
}

TEST(journal_damaged_record_ends_the_reading)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/journal", test_tmpdir());
    CHECK(write_records(path, 0, 0, 4) == 0);
    long full = file_size(path);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    /* flip a byte inside the third record's text: its crc32 no longer matches */
    long rec = (full - 8) / 4;
    fseek(f, 8 + 2 * rec + rec - 3, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, -1, SEEK_CUR);
    fputc(ch ^ 0x20, f);
    fclose(f);
    seen s = {0};
    uint64_t end = 0, dropped = 0;
    strata_err e = {0};
    CHECK(coord_journal_read(path, collect, &s, &end, &dropped, &e) == 0);
    CHECKF(s.n == 2 && (long)end == 8 + 2 * rec && dropped == (uint64_t)(2 * rec),
           "%d records, end %llu", s.n, (unsigned long long)end);
    /* a file that is not a journal is refused, not replayed */
    FILE *g = fopen(path, "wb");
    fputs("not a journal at all", g);
    fclose(g);
    CHECK(coord_journal_read(path, collect, &s, &end, &dropped, &e) == ERR_INPUT);
    CHECKF(strstr(e.msg, "not a strata journal") != NULL, "%s", e.msg);
}

TEST(spool_bytes_come_back_and_dead_segments_go)
{
    const char *dir = test_tmpdir();
    coord_spool_t *sp;
    strata_err e = {0};
    CHECK(coord_spool_open(dir, &sp, &e) == 0);
    coord_spool_start(sp);
    uint8_t a[48], b[48];
    for (int i = 0; i < 48; i++) {
        a[i] = (uint8_t)i;
        b[i] = (uint8_t)(200 - i);
    }
    coord_spool_ref ra, rb;
    CHECK(coord_spool_put(sp, a, sizeof a, 4, &ra, &e) == 0);
    CHECK(coord_spool_put(sp, b, sizeof b, 4, &rb, &e) == 0);
    CHECK(coord_spool_sync(sp, &e) == 0);
    CHECK(ra.seg == rb.seg && rb.off == sizeof a && coord_spool_live(sp) == 2);
    uint8_t *got;
    CHECK(coord_spool_get(sp, &rb, &got, &e) == 0);
    CHECK(!memcmp(got, b, sizeof b));
    free(got);
    coord_spool_close(&sp);
    /* reopened as after a restart: only what is held survives the start */
    CHECK(coord_spool_open(dir, &sp, &e) == 0);
    coord_spool_hold(sp, &ra);
    coord_spool_start(sp);
    CHECK(coord_spool_files(sp) == 1 && coord_spool_live(sp) == 1);
    CHECK(coord_spool_get(sp, &ra, &got, &e) == 0);
    CHECK(!memcmp(got, a, sizeof a));
    free(got);
    coord_spool_ref bad = ra;
    bad.crc ^= 1;
    CHECK(coord_spool_get(sp, &bad, &got, &e) < 0);
    CHECKF(strstr(e.msg, "damaged") != NULL, "%s", e.msg);
    /* the last ref dropped: the segment (not the one appended to) is deleted */
    coord_spool_drop(sp, &ra);
    CHECK(coord_spool_files(sp) == 0 && coord_spool_live(sp) == 0);
    char seg[1200];
    snprintf(seg, sizeof seg, "%s/spool/%08u.seg", dir, ra.seg);
    CHECK(access(seg, F_OK) != 0);
    coord_spool_close(&sp);
}
