/* coordinator internal: the coordinator's top level, which owns the parts and orchestrates them.
 * Not for other folders (they include coordinator/coordinator.h).
 *
 * The state has owners. The task queue (queue.h), the worker registry (registry.h), the job
 * table (job_table.h) and the PNG writer pool (writer.h) are opaque leaves that call nobody back;
 * the files below hold the top level's handlers, each calling leaves and only the handlers
 * listed before it in this file, never one listed after (so no two files call each other):
 *   access.c    CURVE admission, loopback-only without keys, job owners, the output root
 *   metrics.c   /metrics: the Prometheus text of the parts' counts (reads only)
 *   status.c    the status page and its JSON (reads only)
 *   http.c      options.http: the HTTP server of those pages, run by the event loop
 *   coord.c     life cycle, options and the log line (calls no handler)
 *   state.c     --state: journal records and spooled outputs as things happen, group commits
 *   watch.c     WATCH streams: PROGRESS and DONE to clients, STATUS entries
 *   images.c    an image ends (written or failed), a job ends (or stalls) or is cancelled
 *   writes.c    PNGs to the writer pool and back; writes the disk cannot take held and retried
 *   jobs.c      SUBMIT: parse, plan, accept
 *   dispatch.c  scheduling, leases, RESULTs, retries
 *   workers.c   worker messages (HELLO/WELCOME, READY, RESULT, BYE) and liveness
 *   clients.c   client messages (SUBMIT, STATUS, WATCH, CANCEL)
 *   restore.c   --state at start: replay the journal into jobs, then compact it
 *   check.c     coord_check: the invariants across the parts
 *   loop.c      the event loop: messages, timers, finished writes, coord_check after each */
#ifndef STRATA_COORD_INTERNAL_H
#define STRATA_COORD_INTERNAL_H

#include "coordinator/coordinator.h"
#include "coordinator/job_table.h"
#include "coordinator/journal.h"
#include "coordinator/queue.h"
#include "coordinator/registry.h"
#include "coordinator/spool.h"
#include "coordinator/writer.h"
#include "kernels/kernels.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdint.h>

enum {
    COORD_WATCH_MIN_MS = 100,        /* at most ~10 PROGRESS per second per watcher */
    COORD_DRAIN_BATCH = 256,         /* messages read from one socket before dispatching */
    COORD_SKIP_MAX = 64,             /* queued tasks set aside per level and pass (exclusions) */
    COORD_GROUP_MS = 20,             /* journal records wait at most this long for their fsync */
    COORD_STATE_RETRY_MS = 1000,     /* a failed commit (full disk) is tried again this often */
    COORD_COMPACT_MIN = 64 << 20,    /* journal bytes before a compaction is worth it */
    COORD_DISK_RETRY_MS = 1000,      /* a job stalled on its disk tries again after this, */
    COORD_DISK_RETRY_MAX_MS = 30000, /* doubling up to this */
};

typedef struct coord_watcher {
    proto_rid rid;
    coord_job *job;
    uint64_t sent_version;
    long long sent_ms;
} coord_watcher;

struct coord {
    coord_options o; /* defaults resolved */
    pipeline_spec pipe;
    void *ctx, *wsock, *csock;
    char wep[256], cep[256];
    volatile sig_atomic_t stop;

    coord_queue_t *queue;
    coord_registry_t *workers;
    coord_jobs_t *jobs;
    coord_writer_t *writer;
    uint32_t writes;    /* requests with the writer pool, held ones too (writes.c) */
    uint32_t held_refs; /* spooled outputs named by write requests, not slots (writes.c) */

    proto_zap_t *zap; /* access.c's: the ZAP handler with CURVE, else NULL */
    coord_key *allow;
    uint32_t nallow;
    char root[4096];                                          /* the output root, resolved */
    char model_hash[PIPELINE_MAX_LEVELS][MODEL_HASH_HEX + 1]; /* each level's, "" if unread */

    coord_watcher *watchers; /* watch.c's */
    uint32_t nwatchers, capwatchers;

    coord_journal_t *journal; /* --state (state.c, restore.c); NULL without */
    int state_lock;           /* fd holding flock on DIR/lock: one coordinator per state; -1 */
    coord_spool_t *spool;
    long long dirty_since_ms; /* first record not yet committed; 0: none */
    long long retry_at_ms;    /* after a failed commit */
    char state_error[512];    /* "" or why the state directory refuses new jobs */
    int spool_full;           /* the last spool write failed: refuse new jobs until one works */
    uint32_t spool_need;      /* the side of the image whose spool write failed last */
    coord_spool_ref *drops;   /* refs to drop once the records superseding them are durable */
    uint32_t ndrops, capdrops;
    uint64_t compact_at;  /* journal size that triggers the next compaction */
    uint64_t compactions; /* for the log at a stop */

    struct coord_http *http; /* http.c's: the HTTP server, NULL without options.http */
    char hep[300];           /* its bound address, ADDR:PORT */
    uint64_t write_errors;   /* PNG writes that failed (writes.c; metrics) */

    long long next_heartbeat_ms; /* loop.c's */
    long long last_tick_ms;      /* when coord_workers_tick last ran: a longer gap is our stall */
    uint64_t checks;             /* coord_check runs */
};

/* ---------------------------------------------------------------- access.c */

/* Refuse endpoints beyond loopback without keys (unless insecure, then said on stderr); with
 * keys, copy the allow list and start the ZAP handler in c->ctx, before anything binds. */
int coord_access_start(coord_t *c, strata_err *e);
void coord_access_stop(coord_t *c);
/* Hash each level's model directory (model_hash_dir) into c->model_hash; a level whose files
 * this host cannot read is left unchecked, said on stderr. */
void coord_access_models(coord_t *c);
/* 1 when the client key user ("" without CURVE) may cancel a job of owner: its own, or an
 * admin key's. */
int coord_access_may_cancel(const coord_t *c, const char *user, const char *owner);
/* Resolve options.out_root (made when missing) into c->root. ERR_INPUT naming out_root. */
int coord_root_init(coord_t *c, strata_err *e);
/* The path a client named for field (out, init_images), resolved inside the output root into
 * out (relative: to the root; absolute: must lie in it; symlinks followed), made as a directory
 * when make. ERR_INPUT "SUBMIT: FIELD: ..." when it escapes the root. */
int coord_root_path(const coord_t *c, const char *field, const char *path, int make, char *out,
                    size_t len, strata_err *e);

/* Job j's paths inside the output root: its directory (j->dir: OUT/<job>, OUT being its out
 * resolved and made) and its init_images (resolved in place). ERR_INPUT naming the field. */
int coord_job_paths(const coord_t *c, coord_job *j, strata_err *e);

/* ---------------------------------------------------------------- metrics.c, status.c */

struct coord_text;
/* /metrics: every strata_* family (HELP, TYPE, samples) into t. */
void coord_metrics_text(coord_t *c, struct coord_text *t);
/* The status page (HTML, refreshing itself) / the same as JSON, into t. */
void coord_status_html(coord_t *c, struct coord_text *t);
void coord_status_json(coord_t *c, struct coord_text *t);

/* ---------------------------------------------------------------- http.c */

/* Bind options.http (ADDR:PORT; nothing when NULL or ""): ERR_INPUT for a malformed address or
 * one beyond loopback without keys or insecure, ERR_RUNTIME when it cannot listen. */
int coord_http_start(coord_t *c, strata_err *e);
void coord_http_stop(coord_t *c);
/* The fd the loop polls for the server (-1 without one); *wait is lowered to the server's
 * next timeout. */
int coord_http_fd(coord_t *c, int *wait);
/* Serve what is ready: requests are answered here, on the loop's thread. */
void coord_http_serve(coord_t *c);

/* ---------------------------------------------------------------- coord.c */

/* One line "coordinator: ..." on stderr; verbose-only lines pass always = 0. */
void coord_log(const coord_t *c, int always, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------- state.c */

/* With a state directory (c->journal set; each is a no-op without): job j is accepted, its
 * SUBMIT text kept and its JOB record committed now (text NULL: nothing, a replayed job). 0, or a
 * negative code with e when the state directory cannot take it (full): the job is refused, nothing
 * is journaled. */
int coord_state_accept(coord_t *c, coord_job *j, const char *text, strata_err *e);
/* Slot s's level output (not its last level) goes to the spool, with its LEVEL record; the
 * slot's previous one is dropped once that is durable. A full disk keeps it in memory only. */
void coord_state_level(coord_t *c, uint32_t s, const uint8_t *rgb, int side);
/* Image `image` of job j is written (ok) or failed with reason: its IMAGE record; *spool (the
 * spooled output its last level started from) is dropped once that record is durable. */
void coord_state_image(coord_t *c, coord_job *j, uint32_t image, coord_spool_ref *spool, int ok,
                       const char *reason);
/* A spooled output no longer needed (a held image's, its job cancelled); ref->seg becomes 0. */
void coord_state_drop(coord_t *c, coord_spool_ref *ref);
/* Slot s goes away without its image finishing (a cancel): its spooled output is dropped. */
void coord_state_slot_gone(coord_t *c, uint32_t s);
/* Job j ended (done, failed, cancelled): its END record; what it spooled is dropped. */
void coord_state_job_end(coord_t *c, coord_job *j);
/* Slot s just started its image at the job's first level: when the image has an output in
 * the spool (from before a restart), it moves on to the next level with it as cond. 1 when it
 * did, 0 otherwise. */
int coord_state_resume(coord_t *c, uint32_t s);
/* Group commit: once records waited COORD_GROUP_MS (now when force), the spool then the
 * journal are fsync'd. The ms until the next commit is due, or -1 when nothing waits. */
int coord_state_commit(coord_t *c, long long now, int force);
/* Rewrite the journal with only what the state holds now (running jobs, their images
 * finished and outputs spooled; ended jobs as JOB and END). 0, or a negative code with e. */
int coord_state_compact(coord_t *c, strata_err *e);
/* The spool's live refs are exactly those of the slots, of the jobs' resume lists and of the
 * pending drops. 0, or -1 with e. */
int coord_state_check(const coord_t *c, strata_err *e);

/* ---------------------------------------------------------------- watch.c */

/* Send m to a client; 0, or a negative code (logged when verbose). */
int coord_client_send(coord_t *c, const proto_rid *to, const proto_msg *m);
/* Job j's STATUS entry; lv holds its levels (PIPELINE_MAX_LEVELS entries). */
void coord_job_status(const coord_t *c, const coord_job *j, struct proto_job_status *st,
                      struct proto_level_status *lv);
/* WATCH j from a client: PROGRESS now, then when j changes, DONE when it ends. 0, or -1 when
 * out of memory (the caller answers ERROR). */
int coord_watch(coord_t *c, const proto_rid *from, coord_job *j);
/* Send due PROGRESS messages; the ms until the next one is due (or -1: none pending). */
int coord_watchers_flush(coord_t *c, long long now);
/* Job j ended: final PROGRESS then DONE to its watchers, which are dropped. */
void coord_watchers_job_ended(coord_t *c, coord_job *j);

/* ---------------------------------------------------------------- images.c */

/* 1 when a write failed with errno err because of the disk, which may take it later (full,
 * over quota, read-only, not writable, an I/O error): the job stalls and tries again. */
int coord_disk_trouble(int err);
/* Job j cannot write path (errno err): it stalls with the reason "cannot write PATH: ERROR"
 * (logged once), its next retry in 1 s, or (again: a retry failed) twice the last wait, at most
 * COORD_DISK_RETRY_MAX_MS. */
void coord_job_stalls(coord_t *c, coord_job *j, const char *path, int err, int again);
/* Image `image` of running job j ends, written (ok) or failed with reason (kept for the
 * manifest), its spooled input *spool dropped; the caller frees its slot if it has one. */
void coord_job_image_end(coord_t *c, coord_job *j, uint32_t image, coord_spool_ref *spool, int ok,
                         const char *reason);
/* Image of slot s written / failed (reason kept for the manifest); ends the job when complete. */
void coord_image_ok(coord_t *c, uint32_t s);
void coord_image_failed(coord_t *c, uint32_t s, const char *reason);
/* End job j if it is not stalled, every image is written or failed and no write is pending:
 * its manifest (a disk that cannot take it stalls the job instead), then its watchers. */
void coord_job_check_end(coord_t *c, coord_job *j);
/* CANCEL: 0, or a negative code with e. */
int coord_job_cancel(coord_t *c, const char *id, strata_err *e);

/* ---------------------------------------------------------------- writes.c */

/* Queue the PNG of slot s's current level (final: the job's output, the slot then waits in
 * WRITING; else a keep_levels copy). 0, or -1 when out of memory. */
int coord_png_queue(coord_t *c, uint32_t s, int final, const uint8_t *rgb, int side);
/* Handle the writes the pool finished: final images complete (or fail), jobs may end; a write
 * the disk cannot take is held and its job stalls. */
void coord_writes_collect(coord_t *c);
/* The loop's timer: stalled jobs whose retry is due try a held write again (or their
 * manifest); *retried says whether one did. The ms until the next retry is due, or -1 when none
 * waits. */
int coord_writes_retry(coord_t *c, long long now, int *retried);
/* Writes with the pool's threads (c->writes less the held ones). */
uint32_t coord_writes_in_pool(const coord_t *c);

/* ---------------------------------------------------------------- jobs.c */

/* Handle SUBMIT from the client key owner ("" without CURVE): 0 and the id in id_out
 * (COORD_ID_MAX bytes), or a negative code with e. With a state directory, the same spec as a
 * running job's (one restored) is that job again (its owner unchanged). */
int coord_job_submit(coord_t *c, const char *text, const char *owner, char *id_out, strata_err *e);
/* A job from its journaled SUBMIT text, registered as running (restore.c). NULL with e. */
coord_job *coord_job_restore(coord_t *c, const char *text, strata_err *e);

/* ---------------------------------------------------------------- dispatch.c */

/* Hand queued tasks (deepest level first) and new images (within the backpressure bound) to
 * workers with credits. */
void coord_dispatch(coord_t *c);
/* RESULT from worker w (a registry index). */
void coord_on_result(coord_t *c, int w, const struct proto_result *r);
/* A task lost its worker (silence, BYE, re-HELLO): re-queue it in front with a new attempt, or
 * fail the image after max_attempts losses. */
void coord_task_lost(coord_t *c, uint32_t s, const char *why);
/* A task its worker never received, or still held when it left after draining: re-queue it in
 * front with a new attempt, counted neither as a failure nor as a loss. */
void coord_task_returned(coord_t *c, uint32_t s, const char *why);

/* ---------------------------------------------------------------- workers.c */

/* user: the sender's CURVE key (Z85), "" without CURVE. */
void coord_on_worker_msg(coord_t *c, const proto_rid *from, const char *user, proto_msg *m);
/* Send HEARTBEAT to every worker, give back parked credits and forget the silent ones. */
void coord_workers_tick(coord_t *c, long long now);
/* Tell every worker SHUTDOWN. */
void coord_workers_shutdown(coord_t *c);

/* ---------------------------------------------------------------- clients.c */

void coord_on_client_msg(coord_t *c, const proto_rid *from, const char *user, proto_msg *m);
/* A frame from a client that did not decode: ERROR back when the sender is known. */
void coord_client_garbage(coord_t *c, const proto_rid *from, const char *why);

/* ---------------------------------------------------------------- restore.c */

/* Open options.state_dir, replay its journal into the job table (jobs resume where they were:
 * images finished are skipped, spooled outputs resume at the next level; a torn last record is
 * dropped) and compact it. 0 (nothing without a state directory), or a negative code with e. */
int coord_restore(coord_t *c, strata_err *e);

/* ---------------------------------------------------------------- check.c */

/* The invariants of the whole state: each part's own (coord_queue_check, coord_registry_check,
 * coord_jobs_check), then across them: every task in flight is leased to a live worker of its
 * level and counted once (by that worker and by its job's level counts), every image in flight
 * belongs to a running job that counts it, and the writes pending per job add up to the
 * requests with the writer pool. 0, or a negative code naming the first broken one in e. */
int coord_check(coord_t *c, strata_err *e);
/* With options.check: count a check and run it; on failure print "coordinator: invariant
 * broken after EVENT: ..." and abort. Nothing otherwise. */
void coord_check_after(coord_t *c, const char *event);

#endif
