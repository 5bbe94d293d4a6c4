/* coordinator internal: the job table, an opaque list of the jobs the coordinator knows (running
 * ones in arrival order, ended ones kept for STATUS up to COORD_KEEP_ENDED), and the record of
 * one job. A leaf: it calls no other part of the coordinator.
 *
 * A job keeps counters and a list of failures, not a record per image: images not started are
 * its cursor (next), finished ones are counters, the ones in flight are slots of the queue. The
 * counters change only through the coord_job_* functions below, which also bump the version
 * watchers compare. */
#ifndef STRATA_COORD_JOB_TABLE_H
#define STRATA_COORD_JOB_TABLE_H

#include "coordinator/coordinator.h"
#include "coordinator/journal.h"

#include <stdint.h>

enum {
    COORD_ID_MAX = SPEC_NAME_MAX + 8,
    COORD_KEEP_ENDED = 1024, /* ended jobs kept for STATUS; older ones are forgotten */
    COORD_JOB_STRIKES = 3,   /* failed tasks of one job after which a worker is kept off it */
};

typedef enum coord_job_state {
    COORD_JOB_RUNNING = 0,
    COORD_JOB_DONE,
    COORD_JOB_CANCELLED,
    COORD_JOB_FAILED,
} coord_job_state;

/* The task time histogram's buckets (metrics): upper bounds in ms, then +Inf. */
enum { COORD_TASK_BUCKETS = 16 };
extern const uint32_t coord_task_bucket_ms[COORD_TASK_BUCKETS - 1];

typedef struct coord_level_count {
    uint32_t queued, running, done;
    uint64_t compute_ms; /* the workers' elapsed_ms summed over this level's done tasks */
    uint32_t ended;      /* leases ended (done, failed or lost): ended - done failed (metrics) */
    uint32_t hist[COORD_TASK_BUCKETS]; /* done tasks by elapsed_ms, one bucket each */
} coord_level_count;

typedef struct coord_failure {
    uint32_t image;
    uint32_t reason; /* index into the job's reasons */
} coord_failure;

/* An image whose level output waits in the spool (restored from a state directory). */
typedef struct coord_resume {
    uint32_t image;
    uint8_t level;
    coord_spool_ref ref;
} coord_resume;

typedef struct coord_job {
    char id[COORD_ID_MAX];
    job_spec spec;                              /* owns spec.seeds until the job ends */
    char dir[SPEC_PATH_MAX + COORD_ID_MAX + 2]; /* OUT/<job> */
    char owner[PROTO_KEY_LEN + 1];              /* the submitter's CURVE key; "" without keys */
    int first, end;                             /* pipeline levels [first, end) run for this job */
    uint32_t arrival;                           /* submission order */
    coord_job_state state;
    uint32_t count, next, done, failed, active; /* next = done + failed + active while running */
    uint32_t cursor;      /* the next image index to start: those in finished are skipped */
    char *text;           /* with --state: the SUBMIT text, journaled and kept for compaction */
    uint8_t *finished;    /* with --state: bit i set once image i is written or failed */
    coord_resume *resume; /* with --state, after a restart: sorted by image; those from */
    uint32_t nresume, resume_at;  /* resume_at on have not started yet */
    uint32_t pending_writes;      /* PNGs with the writer pool (held ones too): ends when 0 */
    uint64_t version;             /* bumped on every change watchers can see */
    long long added_ms, ended_ms; /* when the table took it / it stopped (0: running) */
    uint32_t latest;              /* 1 + the index of the last image written; 0: none yet */
    /* stalled: its outputs' disk cannot take them now (full, read-only...): no new image
     * starts, the results wait with the writer pool, a retry comes at stall_retry_at */
    int stalled;
    char *stall;              /* why, for STATUS: "cannot write DIR: ERROR" (NULL: no memory) */
    int stall_retry_ms;       /* the backoff: 0 (none yet), then 1 s doubling up to 30 s */
    long long stall_retry_at; /* clock_now_ms of the next retry */
    uint8_t stall_probe;      /* a retry write is with the pool */
    uint32_t held; /* images (counted active) whose final PNG failed for lack of disk: no slot */
    coord_level_count lv[PIPELINE_MAX_LEVELS];
    int steps[PIPELINE_MAX_LEVELS]; /* the job's steps per pipeline level (spec.steps); 0: the
                                       level's own */
    float *timings; /* per image and level: CPU and wall seconds (timings.c), or NULL */
    coord_failure *fails;
    uint32_t nfails, capfails;
    char **reasons;
    uint32_t nreasons, capreasons;
    struct coord_strike {
        uint64_t rid_hash; /* a worker that failed tasks of this job */
        uint32_t count;
    } * strikes;
    uint32_t nstrikes, capstrikes;
} coord_job;

/* ---------------------------------------------------------------- one job */

/* A new job record (zeroed, running), or NULL when out of memory. */
coord_job *coord_job_new(void);
/* Free j and what it owns; *j becomes NULL. NULL is fine. */
void coord_job_destroy(coord_job **j);
const char *coord_job_state_name(coord_job_state s);
/* What STATUS and the status page show: j's state name, or "stalled" while it runs stalled. */
const char *coord_job_state_shown(const coord_job *j);
/* Seed of image i. */
uint64_t coord_job_seed(const coord_job *j, uint32_t i);

/* The index of the image to start next: the next one not finished before a restart. */
uint32_t coord_job_next_image(coord_job *j);
/* Its next image starts: its index (coord_job_next_image's). */
uint32_t coord_job_image_started(coord_job *j);
/* An image in flight finished: written (ok) or failed. */
void coord_job_image_finished(coord_job *j, int ok);
/* Image i is written or failed (with --state: its bit in finished). */
void coord_job_mark_finished(coord_job *j, uint32_t image);
int coord_job_is_finished(const coord_job *j, uint32_t image);
/* Image i's PNG is written: the latest one (the status page shows it). */
void coord_job_image_written(coord_job *j, uint32_t image);
/* Keep that image failed for reason (for the manifest); -1 when out of memory. */
int coord_job_fail_image(coord_job *j, uint32_t image, const char *reason);
/* A task at level was queued / taken out of the queue without a lease (its image fails next) /
 * leased to a worker / lost its lease (it is queued again or its image fails next) / done, its
 * worker having reported elapsed_ms. */
void coord_job_task_queued(coord_job *j, int level);
void coord_job_task_unqueued(coord_job *j, int level);
void coord_job_task_leased(coord_job *j, int level);
void coord_job_task_unleased(coord_job *j, int level);
void coord_job_task_done(coord_job *j, int level, uint64_t elapsed_ms);
/* A PNG of j went to the writer pool / came back. */
void coord_job_write_queued(coord_job *j);
void coord_job_write_done(coord_job *j);
/* j's outputs cannot be written now, for reason (copied): it stalls (or stays stalled, the new
 * reason replacing the old). */
void coord_job_stall(coord_job *j, const char *reason);
/* j's outputs can be written again (or are tried again). */
void coord_job_unstall(coord_job *j);
/* Every image of j is written or failed: it is done (failed when every image failed). */
void coord_job_finished(coord_job *j);
/* j is cancelled: what was in flight is dropped (the caller frees its slots). */
void coord_job_cancelled(coord_job *j);
/* Release what only a running job needs (the seeds, the failure list) once it has ended and its
 * manifest is written. */
void coord_job_shrink(coord_job *j);

/* Failed tasks of j by the worker with routing-id hash h, NULL when none (create: a new
 * count of 0, NULL when out of memory). */
uint32_t *coord_job_strikes(coord_job *j, uint64_t h, int create);

/* ---------------------------------------------------------------- the table */

typedef struct coord_jobs coord_jobs_t;

/* An empty table. 0, or -1 when out of memory. */
int coord_jobs_new(coord_jobs_t **out);
/* Free it and every job; *t becomes NULL. NULL is fine. */
void coord_jobs_destroy(coord_jobs_t **t);

/* The next arrival number: the order of jobs of the same priority. */
uint32_t coord_jobs_arrival(coord_jobs_t *t);
/* Make room for a job with this id: forget an ended one of that id. -1 when one is still
 * running or writing. */
int coord_jobs_make_room(coord_jobs_t *t, const char *id);
/* Add j (running; the table owns it from now on) and forget the oldest ended jobs beyond
 * COORD_KEEP_ENDED. 0, or -1 when out of memory (j is then still the caller's). */
int coord_jobs_add(coord_jobs_t *t, coord_job *j);
/* j ended (finished or cancelled): it leaves the running list and stays for STATUS. */
void coord_jobs_stopped(coord_jobs_t *t, coord_job *j);

coord_job *coord_jobs_find(const coord_jobs_t *t, const char *id);
/* Every job known, in table order / the running ones, in arrival order. */
uint32_t coord_jobs_count(const coord_jobs_t *t);
coord_job *coord_jobs_at(const coord_jobs_t *t, uint32_t i);
uint32_t coord_jobs_running(const coord_jobs_t *t);
coord_job *coord_jobs_running_at(const coord_jobs_t *t, uint32_t i);
/* Index of running job j in the running list (binary search by arrival), or -1. */
int64_t coord_jobs_running_index(const coord_jobs_t *t, const coord_job *j);
/* The best running job, not stalled, that starts at level with images left to start, or
 * NULL. */
coord_job *coord_jobs_next_to_start(const coord_jobs_t *t, int level);

/* What the jobs the table forgot had counted per level (done, ended, compute_ms, hist): the
 * metrics' counters add it so they never go down. PIPELINE_MAX_LEVELS entries. */
const coord_level_count *coord_jobs_retired(const coord_jobs_t *t);

/* The table's own invariants: the running list is the running jobs in arrival order; each job's
 * images add up (next = done + failed + active while it runs, nothing in flight once ended). 0,
 * or -1 naming the first broken one in e. */
int coord_jobs_check(const coord_jobs_t *t, strata_err *e);

#endif
