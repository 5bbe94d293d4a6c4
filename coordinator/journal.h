/* coordinator internal: the journal of a state directory (`--state DIR`), an append-only file of
 * checksummed records: a job accepted (with its spec text), a level result stored in the spool,
 * an image written or failed, a job ended. A leaf: it knows records, not jobs.
 *
 * File: "STRATAJ1", then records [u32 len][u32 crc32 of the payload][payload], little-endian.
 * Records are appended to a buffer and written and fsync'd in groups (coord_journal_sync): a
 * record is durable once a sync returned 0. Reading stops at the first record that does not fit
 * or whose checksum fails (a torn last record: the writer was killed mid-write), which is
 * dropped. */
#ifndef STRATA_COORD_JOURNAL_H
#define STRATA_COORD_JOURNAL_H

#include "common/common.h"

#include <stddef.h>
#include <stdint.h>

typedef enum coord_rec_type {
    COORD_REC_JOB = 1, /* job, arrival, text: accepted with this spec */
    COORD_REC_LEVEL,   /* job, image, level, ref: that level's output is in the spool */
    COORD_REC_IMAGE,   /* job, image, ok (0: text is the reason): the image is written or failed */
    COORD_REC_END,     /* job, state, done, failed: the job ended (done, failed or cancelled) */
    COORD_REC_OWNER,   /* job, text: the CURVE key that submitted it. Written just before its JOB
                        * record, so any prefix of the file that holds a JOB holds its owner; a
                        * journal from before owners has none (the job then has no owner: only an
                        * admin key may cancel it), and a reader from before skips the record */
} coord_rec_type;

/* Where a level output lies in the spool: segment seg (from 1; 0: nowhere), bytes [off, off +
 * len), their crc32, an image side x side x 3. */
typedef struct coord_spool_ref {
    uint32_t seg, len, crc;
    uint64_t off;
    uint32_t side;
} coord_spool_ref;

typedef struct coord_rec {
    uint8_t type; /* coord_rec_type */
    const char *job;
    uint32_t image, arrival, done, failed;
    uint8_t level, ok, state;
    coord_spool_ref ref;
    const char *text; /* JOB: the spec; IMAGE failed: the reason */
    uint32_t textlen;
} coord_rec;

typedef struct coord_journal coord_journal_t;

/* Called for each intact record in file order; job and text are NUL-terminated and good during
 * the call only. Return 0 to go on, negative to stop the reading with that code. */
typedef int (*coord_rec_fn)(void *ctx, const coord_rec *r);

/* Read path (missing: nothing) calling fn for each intact record; the offset after the last
 * intact one goes to *valid_end and the bytes dropped after it to *dropped. 0, or a negative
 * code with e (cannot read, or fn's code). */
int coord_journal_read(const char *path, coord_rec_fn fn, void *ctx, uint64_t *valid_end,
                       uint64_t *dropped, strata_err *e);
/* Open path for appending at valid_end (the file is cut there: a torn tail goes), creating it
 * when missing. 0, or a negative code with e. */
int coord_journal_open(const char *path, uint64_t valid_end, coord_journal_t **out, strata_err *e);
/* Close (syncing what is buffered, if it can); *j becomes NULL. NULL is fine. */
void coord_journal_close(coord_journal_t **j);
/* Buffer one record. 0, or -1 when out of memory (nothing buffered). */
int coord_journal_append(coord_journal_t *j, const coord_rec *r);
/* The buffer's length, to take back the records appended after it (coord_journal_rewind). */
size_t coord_journal_mark(const coord_journal_t *j);
void coord_journal_rewind(coord_journal_t *j, size_t mark);
/* Records buffered and not yet written. */
int coord_journal_dirty(const coord_journal_t *j);
/* Write the buffered records and fsync. On failure (a full disk) the file is cut back to its
 * last good end and the records stay buffered for the next try. 0, or a negative code with e. */
int coord_journal_sync(coord_journal_t *j, strata_err *e);
/* Bytes in the file (synced records). */
uint64_t coord_journal_size(const coord_journal_t *j);
/* Replace the file by one holding only the records buffered in fresh (a journal opened on a
 * temporary path, nothing synced), atomically and durably; j then appends to the new file and
 * fresh is closed. 0, or a negative code with e (j unchanged). */
int coord_journal_replace(coord_journal_t *j, coord_journal_t **fresh, strata_err *e);
/* An empty in-memory journal for coord_journal_replace (writes nothing until then). */
int coord_journal_new_buffer(coord_journal_t **out);

#endif
