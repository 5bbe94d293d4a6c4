/* coordinator: one process that takes jobs from clients, keeps per-level queues of tasks,
 * leases them to workers with credits, watches their heartbeats, retries what fails or is lost,
 * and writes each job's PNGs and manifest. With a state directory its jobs, the images written
 * and the level outputs in flight survive a restart (a journal and a spool: docs/design.md
 * section 6); without one a restart forgets them.
 * The only header other folders include from coordinator/; it includes what it uses. This first
 * part holds the job spec the coordinator runs (filled by cluster/'s YAML loader); pipelines
 * are proto's level contract. */
#ifndef STRATA_COORDINATOR_H
#define STRATA_COORDINATOR_H

#include "common/common.h"

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h" /* the level contract: level_spec, pipeline_spec, strata_err */

/* A batch job (job YAML or `strata render` flags). */
typedef struct job_spec {
    char pipeline[SPEC_PATH_MAX];
    char name[SPEC_NAME_MAX]; /* job id; generated when empty */
    int count;                /* images */
    uint64_t seed;            /* image i uses seeds[i] if given, else seed + i */
    uint64_t *seeds;          /* optional explicit list (count entries), malloc'd */
    int resolution;           /* target side; the planner picks the levels */
    char out[SPEC_PATH_MAX];  /* output directory: OUT/<job>/<index>.png */
    int priority;
    int class_label;                 /* -1: none or the model's null class */
    int keep_levels;                 /* also write <index>.<level>.png for each level */
    char start_level[SPEC_NAME_MAX]; /* "" or a level name: start there from init_images */
    char init_images[SPEC_PATH_MAX]; /* directory of <index 6 digits>.png inputs */
    /* A compute budget and the sampling chosen for it (cluster/plan.c: `strata render --budget`
     * plans, the job records the choice so a re-run gives the same bytes). steps[i] overrides
     * the steps of the level named step_levels[i]; direct runs the job's last level as a
     * one-pass direct level. budget_s and predicted_s (CPU seconds per image) are recorded in
     * the manifest and PNGs only: they change no pixel. */
    double budget_s, predicted_s; /* 0: none */
    char step_levels[PIPELINE_MAX_LEVELS][SPEC_NAME_MAX];
    int steps[PIPELINE_MAX_LEVELS];
    int nsteps;
    int direct;
} job_spec;

void job_spec_free(job_spec *j);
/* "" when a and b ask for the same images (the pipeline path and name aside), else the first
 * field that differs, "FIELD A, was B", in buf (len bytes). */
const char *job_spec_diff(const job_spec *a, const job_spec *b, char *buf, size_t len);

/* ---------------------------------------------------------------- the coordinator */

/* Parses a job spec's YAML text (cluster/ provides it: the coordinator knows no YAML).
 * origin names the text in errors. Returns 0 or a negative code with one line in e; on error
 * out owns nothing. */
typedef int (*coord_job_parser)(const char *text, size_t len, const char *origin, job_spec *out,
                                strata_err *e);

/* A public key (Z85) allowed in with CURVE; an admin key may cancel any job. */
typedef struct coord_key {
    char key[PROTO_KEY_LEN + 1];
    int admin;
} coord_key;

typedef struct coord_options {
    const pipeline_spec *pipeline;
    const char *worker_endpoint; /* ROUTER for workers, e.g. "tcp://127.0.0.1:*" */
    const char *client_endpoint; /* ROUTER for clients */
    int heartbeat_ms;            /* 1000 */
    int liveness;                /* heartbeats missed before a worker is dead: 3 */
    int max_images_in_flight;    /* images started and not finished (backpressure); 0: 4 per
                                    worker, at least 8 */
    int max_attempts;            /* distinct workers a task may fail on before its image fails: 3 */
    int max_losses; /* workers a task may lose (they died or left holding it) before its image
                       fails: 3. A task that kills every worker it meets must end, but deaths
                       that are not its doing (a chaos test's kills) may deserve more. */
    coord_job_parser parse_job;
    int verbose;                /* log every task to stderr */
    size_t max_frame;           /* largest frame accepted on either socket; 0: PROTO_MAX_FRAME
                                   (tests use a small one) */
    int writers;                /* threads encoding and writing output PNGs; 0: 4 */
    const char *state_dir;      /* NULL: state in memory only; else the journal and spool live there
                                   and are replayed at coord_run: jobs survive a restart */
    size_t state_compact_bytes; /* journal size that triggers a compaction; 0: 64 MiB (tests
                                   use a small one: `strata coordinator` reads
                                   STRATA_STATE_COMPACT_BYTES) */
    int check; /* verify the state's invariants (credits, leases, per-job counts) after
                  every message and abort naming the first broken one; for tests and
                  debugging (`strata coordinator` sets it from STRATA_COORD_CHECK=1) */
    /* CURVE (docs/design.md section 5): the coordinator's secret key (Z85) and the keys let in
     * on both sockets. NULL: plaintext, and then only loopback endpoints (tcp://127.x, ::1,
     * localhost, ipc, inproc) unless insecure is set (said at start). */
    const char *curve_secret;
    const coord_key *allow;
    uint32_t nallow;
    int insecure;
    const char *out_root;    /* every job's outputs and inputs lie under it; NULL: the working
                                directory (made when missing) */
    size_t client_max_frame; /* the client socket's frame cap; 0: COORD_CLIENT_MAX_FRAME */
    const char *http;        /* "ADDR:PORT" (port 0: any): serve /metrics and the status page there
                                (loopback only unless curve_secret or insecure); NULL: no HTTP */
} coord_options;

/* A job spec, not a tensor: the client socket's default frame cap. */
#define COORD_CLIENT_MAX_FRAME ((size_t)4 << 20)

typedef struct coord coord_t;

/* Bind the sockets; endpoints with port "*" get a free port (see coord_*_endpoint).
 * Returns 0, ERR_INPUT (bad options: a missing pipeline, a malformed endpoint), ERR_NOMEM or
 * ERR_RUNTIME (cannot bind, no writer threads), with one line in e. */
int coord_new(const coord_options *o, coord_t **out, strata_err *e);
/* Close the sockets, finish the queued PNG writes and free everything; *c becomes NULL.
 * NULL and a NULL *c are fine. */
void coord_destroy(coord_t **c);
const char *coord_worker_endpoint(const coord_t *c);
const char *coord_client_endpoint(const coord_t *c);
/* The HTTP server's bound address, ADDR:PORT, or NULL without options.http. */
const char *coord_http_endpoint(const coord_t *c);
/* Serve until coord_stop() (async-signal-safe) is called; then tell workers SHUTDOWN and return
 * 0 (1 when ZeroMQ itself fails, or the state directory cannot be replayed: logged). Call it from
 * one thread at a time. */
int coord_run(coord_t *c);
void coord_stop(coord_t *c);
/* How many times the invariants were verified (0 unless options.check); read it after coord_run
 * returns. */
uint64_t coord_checks_run(const coord_t *c);

#endif
