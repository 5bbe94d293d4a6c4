/* The coordinator through worker deaths and a cancel with coord_check on (the harness turns it
 * on): three jobs on seven fake workers over three levels while one worker dies holding tasks
 * (falls silent), one leaves holding tasks (BYE), one comes back holding tasks (a second HELLO,
 * then a stale RESULT), one fails every task of image 5, and the last job is cancelled as soon
 * as it starts. The two other jobs must complete with every image right, and the
 * invariants must have been checked after every message (a broken one would have aborted the
 * process). */
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W_A0, W_A1, W_DIES, W_B0, W_LEAVES, W_C0, W_RETURNS, NWORKERS };

typedef struct chaos {
    farm f;
    void *client;
    int died, left, returned, cancelled;
    char state[3][32]; /* DONE's state for jobs ja, jb, jc */
} chaos;

static const char *const job_ids[3] = {"ja", "jb", "jc"};

/* The first task worker wi holds (recorded, not answered), or NULL. */
static const task_seen *held_task(const farm *f, int wi)
{
    for (int i = 0; i < f->nseen; i++)
        if (f->seen[i].worker == wi) return &f->seen[i];
    return NULL;
}

/* 1 when worker wi's held task went out again with a later attempt (it was re-queued). */
static int requeued(const farm *f, int wi)
{
    const task_seen *t = held_task(f, wi);
    for (int i = 0; t && i < f->nseen; i++)
        if (f->seen[i].task == t->task && f->seen[i].attempt > t->attempt) return 1;
    return 0;
}

/* 1 when a task of jc (seeds from 90) went out. */
static int jc_started(const farm *f)
{
    for (int i = 0; i < f->nseen; i++)
        if (f->seen[i].seed >= 90) return 1;
    return 0;
}

/* Inject the faults once each, as soon as their worker holds a task (of jb or ja: jc starts
 * last), and cancel jc as soon as it started. */
static void inject(harness *h, chaos *x)
{
    farm *f = &x->f;
    if (!x->died && held_task(f, W_DIES)) {
        f->w[W_DIES].silent = 1; /* no answer, no heartbeat: liveness forgets it */
        x->died = 1;
    }
    if (!x->left && held_task(f, W_LEAVES)) {
        proto_msg bye = {.type = PROTO_BYE};
        harness_send(f->w[W_LEAVES].sock, &bye);
        f->w[W_LEAVES].silent = 1;
        x->left = 1;
    }
    const task_seen *t = held_task(f, W_RETURNS);
    if (!x->returned && t) {
        proto_msg hello = {.type = PROTO_HELLO,
                           .hello = {.worker = "ret", .level = "l64", .host = "t", .pid = 1}};
        harness_send(f->w[W_RETURNS].sock, &hello);
        /* the lease ended with the second HELLO: this RESULT must be dropped */
        harness_result(f->w[W_RETURNS].sock, t->task, t->attempt, 1, t->image, 2, 64);
        f->w[W_RETURNS].received = 0; /* a new registration counts from 0 */
        harness_ready(f->w[W_RETURNS].sock, 2, 0);
        f->w[W_RETURNS].hold = 0;
        x->returned = 1;
    }
    if (!x->cancelled && jc_started(f)) {
        proto_msg m = {.type = PROTO_CANCEL, .cancel = {.job = "jc"}};
        harness_send(x->client, &m);
        x->cancelled = 1;
    }
    (void)h;
}

/* DONE (and CANCELLED, PROGRESS) on the client: note each job's final state. */
static void read_client(chaos *x)
{
    proto_msg m;
    strata_err e = {0};
    while (proto_recv(x->client, NULL, &m, 0, &e) == 0) {
        for (int i = 0; m.type == PROTO_DONE && i < 3; i++)
            if (!strcmp(m.done.job, job_ids[i]))
                snprintf(x->state[i], sizeof x->state[i], "%s", m.done.state);
        proto_msg_free(&m);
    }
}

static int all_ended(const chaos *x)
{
    return x->state[0][0] && x->state[1][0] && x->state[2][0];
}

static int start_workers(harness *h, chaos *x)
{
    static const char *const names[NWORKERS] = {"a0", "a1", "dies", "b0", "leaves", "c0", "ret"};
    static const int levels[NWORKERS] = {0, 0, 0, 1, 1, 2, 2};
    x->f.nw = NWORKERS;
    x->f.first_level = 0;
    x->f.last_level = 2;
    for (int i = 0; i < NWORKERS; i++)
        if (harness_worker(h, &x->f.w[i], names[i], levels[i], 2) < 0) return -1;
    x->f.w[W_DIES].hold = x->f.w[W_LEAVES].hold = x->f.w[W_RETURNS].hold = 1;
    x->f.w[W_C0].fail_image = 5;
    return 0;
}

/* Submit ja (10 images to l64), jb (6 to l32, priority 1), jc (12 to l64) and WATCH them
 * all. */
static int submit_jobs(harness *h, chaos *x)
{
    static const char *const fmt[3] = {
        "name: ja\ncount: 10\nseed: 1\nresolution: 64\nout: %s\n",
        "name: jb\ncount: 6\nseed: 50\nresolution: 32\npriority: 1\nout: %s\n",
        "name: jc\ncount: 12\nseed: 90\nresolution: 64\nout: %s\n"};
    for (int i = 0; i < 3; i++) {
        char spec[1024], id[256];
        snprintf(spec, sizeof spec, fmt[i], h->dir);
        if (harness_submit(x->client, spec, id, sizeof id) < 0) return -1;
    }
    for (int i = 0; i < 3; i++) { /* after the SUBMITs: PROGRESS would come between replies */
        proto_msg m = {.type = PROTO_WATCH, .watch = {.job = job_ids[i]}};
        if (harness_send(x->client, &m) < 0) return -1;
    }
    return 0;
}

/* Every image of job id written right (harness pixels of its last level) and listed ok. */
static int job_outputs_ok(const harness *h, const char *id, int count, int level, int side)
{
    char path[1200];
    for (int i = 0; i < count; i++) {
        snprintf(path, sizeof path, "%s/%s/%06d.png", h->dir, id, i);
        if (!harness_png_is(path, (uint32_t)i, level, side)) return 0;
    }
    snprintf(path, sizeof path, "%s/%s/manifest.jsonl", h->dir, id);
    char *man = harness_read_file(path, NULL);
    int ok = 0;
    for (char *p = man; p && (p = strstr(p, "\"status\":\"ok\"")); p++)
        ok++;
    free(man);
    return ok == count;
}

static void body_faults(harness *h, chaos *x, int *test_failed_)
{
    CHECK(start_workers(h, x) == 0);
    x->client = harness_dealer(h, 0, "chaos");
    CHECK(x->client && submit_jobs(h, x) == 0);
    long long deadline = clock_now_ms() + 20000;
    while (!all_ended(x) && clock_now_ms() < deadline) {
        CHECK(farm_step(h, &x->f, NULL, 20) == 0);
        inject(h, x);
        read_client(x);
    }
    CHECKF(all_ended(x), "jobs ended: ja %s, jb %s, jc %s", x->state[0], x->state[1], x->state[2]);
    CHECKF(x->died && x->left && x->returned && x->cancelled, "faults %d %d %d %d", x->died,
           x->left, x->returned, x->cancelled);
    CHECKF(!strcmp(x->state[0], "done") && !strcmp(x->state[1], "done") &&
               !strcmp(x->state[2], "cancelled"),
           "ja %s, jb %s, jc %s", x->state[0], x->state[1], x->state[2]);
    /* the tasks each fault took away went out again (they were of ja and jb, which completed) */
    CHECKF(requeued(&x->f, W_DIES) && requeued(&x->f, W_LEAVES) && requeued(&x->f, W_RETURNS),
           "re-queued: %d %d %d", requeued(&x->f, W_DIES), requeued(&x->f, W_LEAVES),
           requeued(&x->f, W_RETURNS));
    CHECK(job_outputs_ok(h, "ja", 10, 2, 64));
    CHECK(job_outputs_ok(h, "jb", 6, 1, 32));
}

TEST(coord_survives_worker_deaths_and_cancel_with_checks_on)
{
    harness h;
    static chaos x; /* large (the tasks seen): off the stack */
    memset(&x, 0, sizeof x);
    coord_options o = {.heartbeat_ms = 100, .liveness = 3, .max_images_in_flight = 6};
    CHECK(harness_start(&h, &o) == 0);
    body_faults(&h, &x, test_failed_);
    CHECK(harness_stop(&h) == 0);
    /* a check after every message: at least one per task handed out */
    CHECKF(h.checks >= (uint64_t)x.f.nseen && x.f.nseen > 0, "%llu checks for %d tasks",
           (unsigned long long)h.checks, x.f.nseen);
}
