/* coordinator internals: the state one coordinator process holds and the functions its files
 * share. Not for other folders (they include coordinator/coordinator.h).
 *
 * Shape of the state (sized for 100,000-image jobs at thousands of level-tasks per second):
 * - an image that has started and not finished owns a *slot* (a pool bounded by
 *   max_images_in_flight); the slot holds its current task, lease and conditioning pixels.
 *   Images not started are a job's cursor (next), finished ones are counters plus a list of
 *   failures: no per-image record for the whole job.
 * - a task id is (sequence << COORD_SLOT_BITS) | slot, so a RESULT finds its slot in O(1); the
 *   id stays the same across retries, the attempt number changes (the lease is the pair).
 * - one binary heap per level orders queued slots (re-queued first, then job priority, job
 *   arrival, image index); cancelled entries are dropped lazily when popped.
 * - workers live in a small array scanned linearly (tens of entries), jobs in an array with a
 *   second array of the running ones. */
#ifndef STRATA_COORD_INTERNAL_H
#define STRATA_COORD_INTERNAL_H

#include "coordinator/coordinator.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    COORD_SLOT_BITS = 24, /* task id = seq << 24 | slot */
    COORD_MAX_SLOTS = 1 << 24,
    COORD_MAX_EXCLUDE = 16,   /* max_attempts is capped to this */
    COORD_WATCH_MIN_MS = 100, /* at most ~10 PROGRESS per second per watcher */
    COORD_DRAIN_BATCH = 256,  /* messages read from one socket before dispatching */
    COORD_SKIP_MAX = 64,      /* queued tasks set aside per level and pass (exclusions) */
    COORD_ID_MAX = SPEC_NAME_MAX + 8,
    COORD_KEEP_ENDED = 1024, /* ended jobs kept for STATUS; older ones are forgotten */
    COORD_JOB_STRIKES = 3,   /* failed tasks of one job after which a worker is kept off it */
};

/* ---------------------------------------------------------------- slots */

typedef enum coord_slot_state {
    COORD_SLOT_FREE = 0,
    COORD_SLOT_QUEUED,
    COORD_SLOT_RUNNING,
    COORD_SLOT_WRITING, /* the last level is done; its PNG is with the writer pool */
} coord_slot_state;

struct coord_job;

/* One image in flight. */
typedef struct coord_slot {
    uint64_t task; /* current task id; 0 when free */
    struct coord_job *job;
    uint32_t image;
    uint32_t attempt;   /* 1 for the first try of each level's task */
    uint32_t worker;    /* serial of the lease holder while RUNNING */
    uint32_t next_free; /* free-list link while FREE */
    uint8_t level;      /* pipeline index of the current task */
    uint8_t state;      /* coord_slot_state */
    uint8_t failures;   /* RESULT ok=false (or a bad output) for this task */
    uint8_t losses;     /* workers that died holding this task */
    uint8_t front;      /* re-queued: goes before fresh tasks */
    uint8_t nexcluded;
    uint64_t excluded[COORD_MAX_EXCLUDE]; /* routing-id hashes of workers that failed it */
    uint8_t *cond; /* the previous level's output, cond_side^2 * 3 bytes, or NULL */
    int cond_side;
} coord_slot;

/* ---------------------------------------------------------------- jobs */

typedef enum coord_job_state {
    COORD_JOB_RUNNING = 0,
    COORD_JOB_DONE,
    COORD_JOB_CANCELLED,
    COORD_JOB_FAILED,
} coord_job_state;

typedef struct coord_level_count {
    uint32_t queued, running, done;
    uint64_t compute_ms; /* the workers' elapsed_ms summed over this level's done tasks */
} coord_level_count;

typedef struct coord_failure {
    uint32_t image;
    uint32_t reason; /* index into the job's reasons */
} coord_failure;

typedef struct coord_job {
    char id[COORD_ID_MAX];
    job_spec spec;                              /* owns spec.seeds until the job ends */
    char dir[SPEC_PATH_MAX + COORD_ID_MAX + 2]; /* OUT/<job> */
    int first, end;                             /* pipeline levels [first, end) run for this job */
    uint32_t arrival;                           /* submission order */
    coord_job_state state;
    uint32_t count, next, done, failed, active;
    uint32_t pending_writes; /* PNGs with the writer pool: the job ends when 0 */
    uint64_t version;        /* bumped on every change watchers can see */
    coord_level_count lv[PIPELINE_MAX_LEVELS];
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

/* ---------------------------------------------------------------- workers, watchers */

typedef struct coord_worker {
    proto_rid rid;
    uint64_t rid_hash;
    char name[64];
    uint32_t serial;
    int level;
    uint32_t credits;
    uint32_t parked; /* credits held back after a failed send, given back at the next tick */
    uint32_t running;
    long long last_seen_ms;
} coord_worker;

typedef struct coord_watcher {
    proto_rid rid;
    coord_job *job;
    uint64_t sent_version;
    long long sent_ms;
} coord_watcher;

/* ---------------------------------------------------------------- queues */

typedef struct coord_qent {
    uint64_t task;
    uint32_t slot;
    uint32_t arrival;
    uint32_t image;
    int32_t priority;
    uint8_t front;
} coord_qent;

typedef struct coord_heap {
    coord_qent *e;
    uint32_t n, cap;
} coord_heap;

/* ---------------------------------------------------------------- the writer pool */

/* One PNG to write, self-contained: the writer threads read nothing else. */
typedef struct coord_write {
    struct coord_write *next;
    coord_job *job; /* not freed while it has pending writes */
    uint64_t task;  /* final image: its slot's task id when queued */
    uint32_t slot;
    int final; /* 1: OUT/<job>/<index>.png, which completes the image */
    int ok;    /* set by the writer */
    char err[640];
    char path[SPEC_PATH_MAX + COORD_ID_MAX + 64];
    char job_id[COORD_ID_MAX], index[16], seed[24];
    char levels[PIPELINE_MAX_LEVELS * SPEC_NAME_MAX], pipeline[SPEC_NAME_MAX];
    uint8_t *rgb; /* side x side x 3, owned */
    int side;
} coord_write;

typedef struct coord_writer coord_writer;

/* Start threads writers; 0 or -1. */
int coord_writer_new(int threads, coord_writer **out);
/* Finish every queued write, join the threads, free what is left. NULL is fine. */
void coord_writer_free(coord_writer *p);
/* An fd that polls readable when finished writes wait in coord_writer_take_done. */
int coord_writer_fd(const coord_writer *p);
/* Queue w (ownership passes to the pool until it comes back from take_done). */
void coord_writer_submit(coord_writer *p, coord_write *w);
/* Every finished write (a list through next), or NULL; resets the fd. */
coord_write *coord_writer_take_done(coord_writer *p);
void coord_write_free(coord_write *w);

/* ---------------------------------------------------------------- the coordinator */

struct coord {
    coord_options o; /* defaults resolved */
    pipeline_spec pipe;
    void *ctx, *wsock, *csock;
    char wep[256], cep[256];
    volatile sig_atomic_t stop;

    coord_worker *workers;
    uint32_t nworkers, capworkers, next_serial;
    uint32_t credits[PIPELINE_MAX_LEVELS]; /* sum of the credits of each level's workers */
    uint32_t rr[PIPELINE_MAX_LEVELS];      /* round-robin cursor per level */

    coord_slot *slots;
    uint32_t nslots, capslots, free_head, active;
    uint64_t task_seq;

    coord_heap queues[PIPELINE_MAX_LEVELS];

    coord_job **jobs;
    uint32_t njobs, capjobs, arrivals;
    coord_job **running; /* jobs in state RUNNING, in arrival order */
    uint32_t nrunning, caprunning;

    coord_watcher *watchers;
    uint32_t nwatchers, capwatchers;

    coord_writer *writer;
    long long next_heartbeat_ms;
    long long last_tick_ms; /* when coord_workers_tick last ran: a longer gap is our stall */
};

/* ---------------------------------------------------------------- coord.c */

/* One line "coordinator: ..." on stderr; verbose-only lines pass always = 0. */
void coord_log(const coord_t *c, int always, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Grow *arr (elements of size) so that it holds at least need; 0 or -1 (out of memory). */
int coord_grow(void *arr, uint32_t *cap, uint32_t need, size_t size);
/* The effective backpressure bound. */
uint32_t coord_max_in_flight(const coord_t *c);

/* ---------------------------------------------------------------- queue.c */

/* An empty pool (coord_new calls it). */
void coord_slots_init(coord_t *c);
/* A free slot (index), or -1 when out of memory. Pointers into c->slots may move. */
int64_t coord_slot_alloc(coord_t *c);
/* Release slot s (frees its cond) and the image's place in flight. */
void coord_slot_free(coord_t *c, uint32_t s);
/* Give slot s a fresh task at level: new id, attempt 1, no exclusions. */
void coord_slot_new_task(coord_t *c, uint32_t s, int level);
/* Queue slot s at its level (front: before fresh tasks) and count it as queued. */
int coord_enqueue(coord_t *c, uint32_t s, int front);
/* Pop the best queued slot of level, skipping stale entries; -1 when none. */
int64_t coord_queue_pop(coord_t *c, int level);
/* Put back a popped entry without touching counters. */
int coord_queue_push_raw(coord_t *c, int level, uint32_t s);
/* The slot a task id names, if the id is current; NULL otherwise. */
coord_slot *coord_slot_of_task(coord_t *c, uint64_t task);
void coord_queues_free(coord_t *c);

/* ---------------------------------------------------------------- workers.c */

void coord_on_worker_msg(coord_t *c, const proto_rid *from, proto_msg *m);
/* Index of the worker with routing id rid, or -1. */
int coord_worker_find(const coord_t *c, const proto_rid *rid);
/* Index of the worker with this serial, or -1. */
int coord_worker_by_serial(const coord_t *c, uint32_t serial);
/* Send HEARTBEAT to every worker and forget the silent ones. */
void coord_workers_tick(coord_t *c, long long now);
/* Tell every worker SHUTDOWN. */
void coord_workers_shutdown(coord_t *c);
uint64_t coord_rid_hash(const proto_rid *rid);

/* ---------------------------------------------------------------- dispatch.c */

/* Hand queued tasks (deepest level first) and new images (within the backpressure bound) to
 * workers with credits. */
void coord_dispatch(coord_t *c);
/* RESULT from worker w. */
void coord_on_result(coord_t *c, int w, const struct proto_result *r);
/* A task lost its worker (silence, BYE, re-HELLO, a failed send): re-queue it in front with a
 * new attempt, or fail the image after max_attempts losses. */
void coord_task_lost(coord_t *c, uint32_t s, const char *why);

/* ---------------------------------------------------------------- jobs.c */

/* Handle SUBMIT: 0 and the id in id_out, or -1 with a message in err. */
int coord_job_submit(coord_t *c, const char *text, char *id_out, char *err, size_t errlen);
coord_job *coord_job_find(const coord_t *c, const char *id);
/* Seed of image i. */
uint64_t coord_job_seed(const coord_job *j, uint32_t i);
/* The side a level's output must have for job j (the job's resolution on its last level). */
int coord_job_out_side(const coord_t *c, const coord_job *j, int level);
/* The best running job that starts at level with images left to start, or NULL. */
coord_job *coord_job_next_to_start(const coord_t *c, int level);
/* End job j if every image is written or failed and no write is pending. */
void coord_job_check_end(coord_t *c, coord_job *j);
/* Image done (written) / failed (reason kept for the manifest); ends the job when complete. */
void coord_image_ok(coord_t *c, uint32_t s);
void coord_image_failed(coord_t *c, uint32_t s, const char *reason);
/* CANCEL: 0, or -1 with err. */
int coord_job_cancel(coord_t *c, const char *id, char *err, size_t errlen);
const char *coord_job_state_name(coord_job_state s);
void coord_jobs_free(coord_t *c);

/* ---------------------------------------------------------------- clients.c */

void coord_on_client_msg(coord_t *c, const proto_rid *from, proto_msg *m);
/* A frame from a client that did not decode: ERROR back when the sender is known. */
void coord_client_garbage(coord_t *c, const proto_rid *from, const char *why);
/* Send due PROGRESS messages; the ms until the next one is due (or -1: none pending). */
int coord_watchers_flush(coord_t *c, long long now);
/* Job j ended: final PROGRESS then DONE to its watchers, which are dropped. */
void coord_watchers_job_ended(coord_t *c, coord_job *j);

/* ---------------------------------------------------------------- outputs.c */

/* Queue OUT/<job>/<index>.png (final: 1, for slot s, which then waits in WRITING) or
 * <index>.<level>.png (a keep_levels copy) with the strata:* text chunks; rgb is copied.
 * 0, or -1 when out of memory. */
int coord_png_queue(coord_t *c, uint32_t s, int final, const uint8_t *rgb, int side);
/* Handle the writes the pool finished: final images complete (or fail), jobs may end. */
void coord_writes_collect(coord_t *c);
/* Read init_images/<index>.png for a start_level job; *rgb is malloc'd, side x side. */
int coord_read_init(const coord_t *c, const coord_job *j, uint32_t image, uint8_t **rgb, int *side,
                    char *err, size_t errlen);
/* Write OUT/<job>/manifest.jsonl atomically. 0, or -1 with err. */
int coord_write_manifest(const coord_t *c, coord_job *j, char *err, size_t errlen);
/* mkdir -p path. 0 or -1 with err. */
int coord_mkdirs(const char *path, char *err, size_t errlen);

#endif
