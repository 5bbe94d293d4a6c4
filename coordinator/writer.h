/* coordinator internal: the PNG writer pool, an opaque set of threads that encode and write
 * output PNGs off the event loop. A leaf: its threads touch nothing but the requests. It also
 * keeps the requests that failed for lack of disk (held, for the loop to try again later); only
 * the loop's thread touches those. */
#ifndef STRATA_COORD_WRITER_H
#define STRATA_COORD_WRITER_H

#include "coordinator/coordinator.h"
#include "coordinator/job_table.h"

#include <stdint.h>

/* One PNG to write, self-contained: the writer threads read nothing else. */
typedef struct coord_write {
    struct coord_write *next;
    coord_job *job; /* not freed while it has pending writes */
    uint64_t task;  /* final image: its slot's task id when queued */
    uint32_t slot;
    int final;  /* 1: OUT/<job>/<index>.png, which completes the image */
    int ok;     /* set by the writer */
    int err_no; /* the errno of a failed write (0: not a system error) */
    char err[640];
    /* a final write held for the disk: its image left its slot, these stand in for it */
    uint32_t image;
    coord_spool_ref spool; /* with --state: the spooled output its last level started from */
    uint8_t spool_level;
    uint8_t held;  /* it failed for lack of disk once: its image has no slot any more */
    uint8_t probe; /* the retry that tells whether the disk takes writes again */
    char path[SPEC_PATH_MAX + COORD_ID_MAX + 64];
    char job_id[COORD_ID_MAX], index[16], seed[24];
    char levels[PIPELINE_MAX_LEVELS * SPEC_NAME_MAX], pipeline[SPEC_NAME_MAX];
    char plan[PIPELINE_MAX_LEVELS * (SPEC_NAME_MAX + 8) + 96]; /* strata:plan, "" for none */
    uint8_t *rgb;                                              /* side x side x 3, owned */
    int side;
} coord_write;

typedef struct coord_writer coord_writer_t;

/* Start threads writers; 0 or -1. */
int coord_writer_new(int threads, coord_writer_t **out);
/* Finish every queued write, join the threads, free what is left; *p becomes NULL. NULL is
 * fine. */
void coord_writer_destroy(coord_writer_t **p);
/* An fd that polls readable when finished writes wait in coord_writer_take_done. */
int coord_writer_fd(const coord_writer_t *p);
/* Queue w (ownership passes to the pool until it comes back from take_done). */
void coord_writer_submit(coord_writer_t *p, coord_write *w);
/* Every finished write (a list through next), or NULL; resets the fd. */
coord_write *coord_writer_take_done(coord_writer_t *p);
void coord_write_free(coord_write *w);
/* Keep w (its pixels with it) until coord_writer_unhold: its disk cannot take it now. */
void coord_writer_hold(coord_writer_t *p, coord_write *w);
/* Take back job's held writes (all, or only the oldest): a list through next, or NULL. */
coord_write *coord_writer_unhold(coord_writer_t *p, const struct coord_job *job, int all);
/* Writes held (of job; NULL: of every job), and how many of those are final ones. p NULL: none
 * (a state built without a pool, in tests). */
uint32_t coord_writer_held(const coord_writer_t *p, const struct coord_job *job, uint32_t *finals);
/* The held writes, oldest first, for reading (the list goes through next); NULL p: none. */
const coord_write *coord_writer_held_list(const coord_writer_t *p);

#endif
