/* coordinator internal: the spool of a state directory, where level outputs wait for their next
 * level across a restart. A leaf: it knows byte ranges, not images.
 *
 * Layout: DIR/spool/<8 digits>.seg, append-only segment files of up to COORD_SPOOL_SEGMENT bytes;
 * an output is a byte range of one (a coord_spool_ref, kept by the journal), so a level result
 * costs a write, not a file (this disk creates ~1,500 files/s; the farm routes ~9,000
 * level-tasks/s). A segment counts the refs still live in it and is deleted when it is full and
 * none is left. Data is made durable by coord_spool_sync before the journal records naming it. */
#ifndef STRATA_COORD_SPOOL_H
#define STRATA_COORD_SPOOL_H

#include "coordinator/journal.h"

#include <stddef.h>
#include <stdint.h>

enum { COORD_SPOOL_SEGMENT = 64 << 20 };

typedef struct coord_spool coord_spool_t;

/* Open DIR/spool (created when missing). Segments found stay until coord_spool_start. 0, or a
 * negative code with e. */
int coord_spool_open(const char *dir, coord_spool_t **out, strata_err *e);
void coord_spool_close(coord_spool_t **s);
/* During replay: ref is live (counted in its segment). */
void coord_spool_hold(coord_spool_t *s, const coord_spool_ref *ref);
/* After replay: delete the segments holding no live ref; new data goes to a new segment. */
void coord_spool_start(coord_spool_t *s);
/* Append n bytes (an image side x side x 3), counted live; its place in *ref. 0, or a negative
 * code with e (a full disk: nothing is kept). */
int coord_spool_put(coord_spool_t *s, const uint8_t *data, size_t n, uint32_t side,
                    coord_spool_ref *ref, strata_err *e);
/* Read ref's bytes into *data (malloc'd, ref->len bytes), checking their crc32. 0, or a negative
 * code with e. */
int coord_spool_get(coord_spool_t *s, const coord_spool_ref *ref, uint8_t **data, strata_err *e);
/* ref is no longer needed (its image moved on or ended). ref->seg 0 is fine. */
void coord_spool_drop(coord_spool_t *s, const coord_spool_ref *ref);
/* fdatasync what was appended since the last sync. 0, or a negative code with e. */
int coord_spool_sync(coord_spool_t *s, strata_err *e);
/* Live refs, and segment files on disk (for tests and the log). */
uint64_t coord_spool_live(const coord_spool_t *s);
uint32_t coord_spool_files(const coord_spool_t *s);

#endif
