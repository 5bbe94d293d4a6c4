/* The coordinator over real libzmq (tcp://127.0.0.1:*): a job runs through fake workers to PNGs
 * and a sorted manifest; leases drop stale RESULTs; silent workers lose their tasks to others;
 * a task failing on 3 workers fails its image while the job goes on; CANCEL, STATUS counts,
 * garbage and oversized frames on both sockets, backpressure, keep_levels/resize, start_level,
 * and byte-identical outputs whatever the number of workers. */
#include "kernels/kernels.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

static int send_job_ref(void *client, enum proto_type type, const char *job)
{
    proto_msg m = {.type = type};
    m.watch.job = job; /* WATCH, CANCEL and STATUS share the job_ref layout */
    return harness_send(client, &m);
}

/* The next message of type want on sock within timeout_ms (others, PROGRESS included, skipped). */
static int recv_type(void *sock, enum proto_type want, proto_msg *m, int timeout_ms)
{
    for (int i = 0; i < 64; i++) {
        if (harness_recv(sock, m, timeout_ms) < 0) return -1;
        if (m->type == want) return 0;
        proto_msg_free(m);
    }
    return -1;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* 1 when the file holds the tEXt chunk key=value. */
static int png_has_text(const char *path, const char *key, const char *value)
{
    size_t len, klen = strlen(key), vlen = strlen(value);
    char *data = harness_read_file(path, &len), pat[256];
    memcpy(pat, key, klen + 1);
    memcpy(pat + klen + 1, value, vlen);
    int ok = data && memmem(data, len, pat, klen + 1 + vlen) != NULL;
    free(data);
    return ok;
}

/* The job's STATUS entry polled until pred holds (STATUS and RESULT travel on different sockets,
 * so a count can lag behind what a worker already sent). */
typedef int (*status_pred)(const struct proto_job_status *st);

static int wait_status(void *client, const char *job, status_pred pred, proto_msg *m)
{
    for (int i = 0; i < 100; i++) {
        if (harness_status(client, job, m) < 0 || m->type != PROTO_STATUS_REPLY ||
            m->status_reply.njobs != 1)
            return -1;
        if (pred(&m->status_reply.jobs[0])) return 0;
        proto_msg_free(m);
        proto_msg hb;
        harness_recv(client, &hb, 20); /* nothing comes: a 20 ms pause between polls */
    }
    return -1;
}

/* ---------------------------------------------------------------- a job end to end */

static void body_two_levels(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 1, .nw = 2};
    CHECK(harness_worker(h, &f.w[0], "w16", 0, 2) == 0);
    CHECK(harness_worker(h, &f.w[1], "w32", 1, 2) == 0);
    void *cl = harness_dealer(h, 0, "client");
    char spec[1024], id[256], path[1200];
    snprintf(spec, sizeof spec,
             "name: t1\ncount: 3\nseed: 100\nresolution: 32\nout: %s\n"
             "class_label: 4\n",
             h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(strcmp(id, "t1") == 0);
    CHECK(send_job_ref(cl, PROTO_WATCH, "t1") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0);
    CHECKF(!strcmp(f.done_state, "done") && f.progress >= 1, "%s %d", f.done_state, f.progress);
    CHECKF(f.nseen == 6, "%d tasks", f.nseen);
    for (int i = 0; i < f.nseen; i++) {
        const task_seen *t = &f.seen[i];
        CHECK(t->attempt == 1 && t->resize == 0 && t->class_label == 4 && t->image < 3);
        CHECK(t->seed == 100 + t->image);
        CHECK(t->level == 0 ? !t->has_cond && t->worker == 0 : t->cond_ok && t->worker == 1);
    }
    for (uint32_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/t1/%06u.png", h->dir, i);
        CHECKF(harness_png_is(path, i, 1, 32), "%s", path);
    }
    snprintf(path, sizeof path, "%s/t1/000001.png", h->dir);
    CHECK(png_has_text(path, "strata:job", "t1") && png_has_text(path, "strata:index", "1"));
    CHECK(png_has_text(path, "strata:seed", "101") &&
          png_has_text(path, "strata:levels", "l16,l32"));
    CHECK(png_has_text(path, "strata:pipeline", "tiny"));
    snprintf(path, sizeof path, "%s/t1/manifest.jsonl", h->dir);
    char *man = harness_read_file(path, NULL);
    const char *want = "{\"file\":\"000000.png\",\"index\":0,\"levels\":[\"l16\",\"l32\"],\"seed\":"
                       "100,\"status\":\"ok\"}\n"
                       "{\"file\":\"000001.png\",\"index\":1,\"levels\":[\"l16\",\"l32\"],\"seed\":"
                       "101,\"status\":\"ok\"}\n"
                       "{\"file\":\"000002.png\",\"index\":2,\"levels\":[\"l16\",\"l32\"],\"seed\":"
                       "102,\"status\":\"ok\"}\n";
    CHECKF(man && !strcmp(man, want), "%s", man ? man : "(no manifest)");
    free(man);

    /* WATCH on a finished job: PROGRESS then DONE at once; stop sends SHUTDOWN to workers */
    proto_msg m;
    CHECK(send_job_ref(cl, PROTO_WATCH, "t1") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_PROGRESS && m.progress.done == 3);
    proto_msg_free(&m);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_DONE && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    harness_halt(h);
    CHECK(recv_type(f.w[0].sock, PROTO_SHUTDOWN, &m, 5000) == 0);
    proto_msg_free(&m);
    CHECK(recv_type(f.w[1].sock, PROTO_SHUTDOWN, &m, 5000) == 0);
    proto_msg_free(&m);
}

TEST(coord_job_completes_two_levels)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_two_levels(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- leases */

static int get_task(void *sock, struct proto_task *out, int timeout_ms)
{
    proto_msg m;
    if (recv_type(sock, PROTO_TASK, &m, timeout_ms) < 0) return -1;
    *out = m.task;
    out->cond = (proto_tensor){0};
    out->params.count = 0;
    out->job = out->level = NULL;
    proto_msg_free(&m);
    return 0;
}

/* Re-HELLO on sock and wait for WELCOME: everything sock sent before has been handled. */
static int sync_worker(harness *h, void *sock, const char *name, int level)
{
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = name, .level = h->pipe.levels[level].name, .host = "t"}};
    if (harness_send(sock, &m) < 0 || recv_type(sock, PROTO_WELCOME, &m, 5000) < 0) return -1;
    proto_msg_free(&m);
    return 0;
}

static void body_stale(harness *h, int *test_failed_)
{
    fake_worker w, w2;
    struct proto_task t1, t2;
    char spec[1024], id[256], path[1200];
    CHECK(harness_worker(h, &w, "w1", 0, 1) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: st\ncount: 1\nseed: 5\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(get_task(w.sock, &t1, 5000) == 0 && t1.attempt == 1);
    /* the only worker fails it: it comes back to the same worker with attempt 2 */
    CHECK(harness_result(w.sock, t1.task, 1, 0, 0, 0, 16) == 0 && harness_ready(w.sock, 1) == 0);
    CHECK(get_task(w.sock, &t2, 5000) == 0 && t2.task == t1.task && t2.attempt == 2);

    /* another worker answering the current lease, then the old attempt: both dropped */
    CHECK(harness_worker(h, &w2, "w2", 0, 0) == 0);
    CHECK(harness_result(w2.sock, t2.task, 2, 1, 0, 6, 16) == 0);
    CHECK(sync_worker(h, w2.sock, "w2", 0) == 0);
    CHECK(harness_result(w.sock, t1.task, 1, 1, 0, 5, 16) == 0);
    CHECK(send_job_ref(cl, PROTO_WATCH, "st") == 0);
    CHECK(harness_result(w.sock, t2.task, 2, 1, 0, 0, 16) == 0);
    proto_msg m;
    CHECK(recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    snprintf(path, sizeof path, "%s/st/000000.png", h->dir);
    CHECK(harness_png_is(path, 0, 0, 16)); /* attempt 2's pixels, not the stale ones */

    /* a duplicate RESULT after completion changes nothing */
    CHECK(harness_result(w.sock, t2.task, 2, 1, 0, 7, 16) == 0);
    CHECK(sync_worker(h, w.sock, "w1", 0) == 0);
    CHECK(harness_status(cl, "st", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECKF(st->done == 1 && st->failed == 0 && st->levels[0].done == 1, "done %u failed %u",
           st->done, st->failed);
    /* compute time counts the accepted RESULT only (each says elapsed_ms 1) */
    CHECKF(st->levels[0].compute_ms == 1, "compute_ms %llu",
           (unsigned long long)st->levels[0].compute_ms);
    proto_msg_free(&m);
    CHECK(harness_png_is(path, 0, 0, 16));
}

TEST(coord_stale_result_is_dropped)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_stale(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static void body_silent(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 0, .nw = 2};
    struct proto_task t;
    char spec[1024], id[256];
    CHECK(harness_worker(h, &f.w[0], "wa", 0, 1) == 0);
    f.w[0].silent = 1;
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: sw\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(get_task(f.w[0].sock, &t, 5000) == 0 && t.attempt == 1);
    CHECK(harness_worker(h, &f.w[1], "wb", 0, 1) == 0);
    CHECK(send_job_ref(cl, PROTO_WATCH, "sw") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECKF(f.nseen == 1 && f.seen[0].worker == 1 && f.seen[0].task == t.task &&
               f.seen[0].attempt == 2,
           "%d tasks", f.nseen);
    /* the forgotten worker's late RESULT is dropped; it may join again */
    CHECK(harness_result(f.w[0].sock, t.task, 1, 1, 0, 5, 16) == 0);
    CHECK(sync_worker(h, f.w[0].sock, "wa", 0) == 0);
    proto_msg m;
    CHECK(harness_status(cl, "sw", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    CHECK(m.status_reply.jobs[0].done == 1);
    proto_msg_free(&m);
}

TEST(coord_silent_worker_loses_its_task)
{
    harness h;
    coord_options o = {.heartbeat_ms = 100, .liveness = 5};
    CHECK(harness_start(&h, &o) == 0);
    body_silent(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- failures */

static void body_three_failures(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 0, .nw = 3};
    char spec[1024], id[256], path[1200];
    for (int i = 0; i < 3; i++) {
        char name[8] = {'f', (char)('0' + i), 0};
        CHECK(harness_worker(h, &f.w[i], name, 0, 1) == 0);
        f.w[i].fail_image = 0;
    }
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: tf\ncount: 2\nseed: 9\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "tf") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    int used = 0, attempts = 0;
    for (int i = 0; i < f.nseen; i++)
        if (f.seen[i].image == 0) {
            used |= 1 << f.seen[i].worker;
            attempts |= 1 << f.seen[i].attempt;
        }
    CHECKF(used == 7 && attempts == (2 | 4 | 8), "workers %x attempts %x", used, attempts);
    snprintf(path, sizeof path, "%s/tf/manifest.jsonl", h->dir);
    char *man = harness_read_file(path, NULL);
    const char *want = "{\"error\":\"l16: kaboom\",\"file\":\"000000.png\",\"index\":0,\"levels\":"
                       "[\"l16\"],\"seed\":9,\"status\":\"failed\"}\n"
                       "{\"file\":\"000001.png\",\"index\":1,\"levels\":[\"l16\"],\"seed\":10,"
                       "\"status\":\"ok\"}\n";
    CHECKF(man && !strcmp(man, want), "%s", man ? man : "(no manifest)");
    free(man);
    snprintf(path, sizeof path, "%s/tf/000000.png", h->dir);
    CHECK(!file_exists(path));
    snprintf(path, sizeof path, "%s/tf/000001.png", h->dir);
    CHECK(harness_png_is(path, 1, 0, 16));
}

TEST(coord_task_failing_on_three_workers_fails_its_image)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_three_failures(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static void body_single_failing(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 0, .nw = 1};
    char spec[1024], id[256];
    CHECK(harness_worker(h, &f.w[0], "only", 0, 1) == 0);
    f.w[0].fail_image = 0;
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: one\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "one") == 0);
    /* with no other worker the same one retries: the image fails instead of waiting forever */
    CHECK(farm_run(h, &f, cl, 10000) == 0);
    CHECKF(!strcmp(f.done_state, "failed") && f.nseen == 3, "%s %d", f.done_state, f.nseen);
}

TEST(coord_single_worker_failures_end_the_job)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_single_failing(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* DESIGN.md section 6: a worker that fails 3 tasks of a job is kept off it; the job goes on. */
static void body_bad_worker(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 0, .nw = 2};
    char spec[1024], id[256];
    CHECK(harness_worker(h, &f.w[0], "bad", 0, 1) == 0);
    CHECK(harness_worker(h, &f.w[1], "good", 0, 1) == 0);
    f.w[0].fail_image = FAKE_FAIL_ALL;
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: kept\ncount: 8\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "kept") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0);
    int to_bad = 0;
    for (int i = 0; i < f.nseen; i++)
        to_bad += f.seen[i].worker == 0;
    CHECKF(!strcmp(f.done_state, "done") && to_bad == 3, "%s, %d tasks to the bad worker",
           f.done_state, to_bad);
}

TEST(coord_worker_failing_three_tasks_is_kept_off_the_job)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_bad_worker(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- cancel, status */

static void body_cancel(harness *h, int *test_failed_)
{
    fake_worker w;
    struct proto_task t;
    char spec[1024], id[256], path[1200];
    proto_msg m;
    CHECK(harness_worker(h, &w, "w", 0, 1) == 0);
    void *cl = harness_dealer(h, 0, "client"), *watcher = harness_dealer(h, 0, "watcher");
    snprintf(spec, sizeof spec, "name: cx\ncount: 5\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(get_task(w.sock, &t, 5000) == 0);
    CHECK(send_job_ref(watcher, PROTO_WATCH, "cx") == 0);
    CHECK(harness_recv(watcher, &m, 5000) == 0 && m.type == PROTO_PROGRESS);
    CHECK(!strcmp(m.progress.state, "running") && m.progress.levels[0].running == 1);
    proto_msg_free(&m);
    CHECK(send_job_ref(cl, PROTO_CANCEL, "cx") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_CANCELLED);
    proto_msg_free(&m);
    CHECK(recv_type(watcher, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "cancelled"));
    proto_msg_free(&m);

    /* its RESULT is ignored and no more of its tasks go out */
    CHECK(harness_result(w.sock, t.task, t.attempt, 1, t.image, 0, 16) == 0);
    CHECK(harness_ready(w.sock, 5) == 0);
    CHECK(harness_recv(w.sock, &m, 300) < 0);
    CHECK(harness_status(cl, "cx", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECK(!strcmp(st->state, "cancelled") && st->done == 0 && st->levels[0].queued == 0 &&
          st->levels[0].running == 0);
    proto_msg_free(&m);
    CHECK(send_job_ref(cl, PROTO_CANCEL, "cx") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR);
    proto_msg_free(&m);
    snprintf(path, sizeof path, "%s/cx/000000.png", h->dir);
    CHECK(!file_exists(path));
}

TEST(coord_cancel_drops_queued_and_running_tasks)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_cancel(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static int expect_error(void *cl, const char *spec, const char *needle)
{
    char msg[600];
    return harness_submit(cl, spec, msg, sizeof msg) < 0 && strstr(msg, needle) ? 0 : -1;
}

static int two_done_at_l16(const struct proto_job_status *st)
{
    return st->levels[0].done == 2 && st->levels[1].queued == 2;
}

static void body_status(harness *h, int *test_failed_)
{
    fake_worker w, wz;
    struct proto_task t[2];
    char spec[1024], id[256];
    proto_msg m;
    void *cl = harness_dealer(h, 0, "client");
    CHECK(expect_error(cl, "bogus line\n", "SUBMIT:1") == 0);
    snprintf(spec, sizeof spec, "count: 2\nresolution: 32\nstart_level: l99\nout: %s\n", h->dir);
    CHECK(expect_error(cl, spec, "start_level") == 0);
    snprintf(spec, sizeof spec, "name: ../x\nresolution: 32\nout: %s\n", h->dir);
    CHECK(expect_error(cl, spec, "name") == 0);
    CHECK(send_job_ref(cl, PROTO_STATUS, "nope") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR);
    proto_msg_free(&m);

    CHECK(harness_worker(h, &w, "w", 0, 2) == 0);
    snprintf(spec, sizeof spec, "name: sx\ncount: 4\nresolution: 32\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(expect_error(cl, spec, "already running") == 0);
    CHECK(get_task(w.sock, &t[0], 5000) == 0 && get_task(w.sock, &t[1], 5000) == 0);
    CHECK(harness_status(cl, "sx", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECK(!strcmp(st->id, "sx") && !strcmp(st->state, "running") && st->count == 4 &&
          st->done == 0 && st->failed == 0 && st->nlevels == 2);
    CHECK(!strcmp(st->levels[0].name, "l16") && st->levels[0].queued == 0 &&
          st->levels[0].running == 2 && st->levels[0].done == 0);
    CHECK(!strcmp(st->levels[1].name, "l32") && st->levels[1].queued == 0 &&
          st->levels[1].running == 0);
    proto_msg_free(&m);
    for (int i = 0; i < 2; i++)
        CHECK(harness_result(w.sock, t[i].task, t[i].attempt, 1, t[i].image, 0, 16) == 0);
    CHECK(wait_status(cl, "sx", two_done_at_l16, &m) == 0);
    CHECK(m.status_reply.jobs[0].levels[0].running == 0);
    proto_msg_free(&m);
    CHECK(harness_status(cl, NULL, &m) == 0 && m.type == PROTO_STATUS_REPLY &&
          m.status_reply.njobs == 1);
    proto_msg_free(&m);

    /* a worker for a level the pipeline lacks is sent away */
    wz.sock = harness_dealer(h, 1, "wz");
    m = (proto_msg){.type = PROTO_HELLO, .hello = {.worker = "wz", .level = "l99", .host = "t"}};
    CHECK(harness_send(wz.sock, &m) == 0);
    CHECK(harness_recv(wz.sock, &m, 5000) == 0 && m.type == PROTO_SHUTDOWN);
    proto_msg_free(&m);
}

TEST(coord_status_counts_and_submit_errors)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_status(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- bad frames */

enum { SMALL_FRAME = 4096 };

static int expect_frame_error(void *cl)
{
    proto_msg m;
    int ok = harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR &&
             strstr(m.error.message, "bad frame");
    proto_msg_free(&m);
    return ok ? 0 : -1;
}

static void body_bad_client_frames(harness *h, int *test_failed_)
{
    void *cl = harness_dealer(h, 0, "c1");
    CHECK(zmq_send(cl, "\xc1\xc1garbage", 9, 0) == 9);
    CHECK(expect_frame_error(cl) == 0);
    void *buf;
    size_t len;
    strata_err e = {0};
    proto_msg st = {.type = PROTO_STATUS};
    CHECK(proto_encode(&st, &buf, &len, &e) == 0);
    CHECK(zmq_send(cl, buf, len - 1, 0) == (int)len - 1); /* truncated */
    free(buf);
    CHECK(expect_frame_error(cl) == 0);
    CHECK(zmq_send(cl, "a", 1, ZMQ_SNDMORE) == 1 && zmq_send(cl, "b", 1, 0) == 1);
    CHECK(expect_frame_error(cl) == 0);
    CHECK(zmq_send(cl, "", 0, 0) == 0);
    CHECK(expect_frame_error(cl) == 0);
    proto_msg m = {.type = PROTO_HELLO, .hello = {.worker = "x", .level = "l16", .host = "t"}};
    CHECK(harness_send(cl, &m) == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR);
    proto_msg_free(&m);
    /* over the cap: libzmq cuts the peer off; the coordinator serves the next client */
    char *big = calloc(1, SMALL_FRAME * 2);
    CHECK(zmq_send(cl, big, SMALL_FRAME * 2, 0) == SMALL_FRAME * 2);
    free(big);
    void *c2 = harness_dealer(h, 0, "c2");
    CHECK(harness_status(c2, NULL, &m) == 0 && m.type == PROTO_STATUS_REPLY);
    proto_msg_free(&m);
}

static void body_bad_worker_frames(harness *h, int *test_failed_)
{
    fake_worker w;
    struct proto_task t;
    char spec[1024], id[256];
    proto_msg m;
    void *wg = harness_dealer(h, 1, "wg"), *wb = harness_dealer(h, 1, "wbig");
    CHECK(zmq_send(wg, "\x81\xa1vgarbage", 10, 0) == 10);
    CHECK(zmq_send(wg, "x", 1, ZMQ_SNDMORE) == 1 && zmq_send(wg, "y", 1, 0) == 1);
    char *big = calloc(1, SMALL_FRAME * 2);
    CHECK(zmq_send(wb, big, SMALL_FRAME * 2, 0) == SMALL_FRAME * 2);
    free(big);
    /* no answer to garbage; the same socket's HELLO then gets WELCOME first */
    CHECK(sync_worker(h, wg, "wg", 1) == 0);

    /* a RESULT for no task, then a wrong-sized output: dropped, then retried */
    CHECK(harness_worker(h, &w, "w", 0, 1) == 0);
    CHECK(harness_result(w.sock, 12345, 1, 1, 0, 0, 16) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: bf\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(get_task(w.sock, &t, 5000) == 0 && t.attempt == 1);
    CHECK(harness_result(w.sock, t.task, 1, 1, 0, 0, 8) == 0 && harness_ready(w.sock, 1) == 0);
    CHECK(get_task(w.sock, &t, 5000) == 0 && t.attempt == 2);
    CHECK(send_job_ref(cl, PROTO_WATCH, "bf") == 0);
    CHECK(harness_result(w.sock, t.task, 2, 1, 0, 0, 16) == 0);
    CHECK(recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
}

TEST(coord_bad_frames_are_dropped)
{
    harness h;
    coord_options o = {.max_frame = SMALL_FRAME};
    CHECK(harness_start(&h, &o) == 0);
    body_bad_client_frames(&h, test_failed_);
    if (!*test_failed_) body_bad_worker_frames(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- scheduling */

static void body_backpressure(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 1, .nw = 2};
    char spec[1024], id[256], path[1200];
    CHECK(harness_worker(h, &f.w[0], "w16", 0, 10) == 0);
    CHECK(harness_worker(h, &f.w[1], "w32", 1, 10) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: bp\ncount: 10\nresolution: 32\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "bp") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECKF(f.max_open >= 1 && f.max_open <= 2 && f.finished == 10, "max open %d, finished %d",
           f.max_open, f.finished);
    snprintf(path, sizeof path, "%s/bp/manifest.jsonl", h->dir);
    char *man = harness_read_file(path, NULL);
    int lines = 0;
    for (char *p = man; p && *p; p++)
        lines += *p == '\n';
    free(man);
    CHECK(lines == 10);
}

TEST(coord_backpressure_bounds_images_in_flight)
{
    harness h;
    coord_options o = {.max_images_in_flight = 2};
    CHECK(harness_start(&h, &o) == 0);
    body_backpressure(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static void body_keep_levels(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 1, .nw = 2};
    char spec[1024], id[256], path[1200];
    CHECK(harness_worker(h, &f.w[0], "w16", 0, 4) == 0);
    CHECK(harness_worker(h, &f.w[1], "w32", 1, 4) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: kl\ncount: 2\nresolution: 24\nkeep_levels: 1\nout: %s\n",
             h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "kl") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECK(f.nseen == 4);
    for (int i = 0; i < f.nseen; i++)
        CHECK(f.seen[i].resize == (f.seen[i].level == 1 ? 24 : 0));
    for (uint32_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/kl/%06u.png", h->dir, i);
        CHECK(harness_png_is(path, i, 1, 24));
        snprintf(path, sizeof path, "%s/kl/%06u.l16.png", h->dir, i);
        CHECK(harness_png_is(path, i, 0, 16) && png_has_text(path, "strata:levels", "l16"));
        snprintf(path, sizeof path, "%s/kl/%06u.l32.png", h->dir, i);
        CHECK(harness_png_is(path, i, 1, 24));
    }
}

TEST(coord_keep_levels_and_resize)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_keep_levels(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static void body_start_level(harness *h, int *test_failed_)
{
    farm f = {.first_level = 1, .last_level = 1, .nw = 1};
    char spec[1400], id[256], path[1200], init[1100];
    strata_err e = {0};
    snprintf(init, sizeof init, "%s/init", h->dir);
    CHECK(mkdir(init, 0777) == 0);
    uint8_t *px = harness_pixels(0, 0, 16);
    snprintf(path, sizeof path, "%s/000000.png", init);
    CHECK(png_write_rgb(path, px, 16, 16, NULL, 0, &e) == 0);
    snprintf(path, sizeof path, "%s/000002.png", init);
    CHECK(png_write_rgb(path, px, 8, 8, NULL, 0, &e) == 0);
    free(px);
    CHECK(harness_worker(h, &f.w[0], "w32", 1, 4) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec,
             "name: sl\ncount: 3\nresolution: 32\nstart_level: l32\n"
             "init_images: %s\nout: %s\n",
             init, h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(send_job_ref(cl, PROTO_WATCH, "sl") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECKF(f.nseen == 1 && f.seen[0].image == 0 && f.seen[0].level == 1 && f.seen[0].cond_ok,
           "%d tasks", f.nseen);
    snprintf(path, sizeof path, "%s/sl/manifest.jsonl", h->dir);
    char *man = harness_read_file(path, NULL);
    CHECK(man);
    char *l1 = strchr(man, '\n'), *l2 = l1 ? strchr(l1 + 1, '\n') : NULL;
    int ok = l1 && l2 && strstr(man, "\"levels\":[\"l32\"]") < l1 && strstr(man, "\"ok\"") < l1 &&
             strstr(l1, "000001.png\"") && strstr(l1, "failed") < l2 && strstr(l2, "8x8");
    CHECKF(ok, "%s", man);
    free(man);
}

TEST(coord_start_level_reads_init_images)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_start_level(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

/* ---------------------------------------------------------------- determinism */

typedef struct outputs {
    char *file[5];
    size_t len[5];
} outputs;

static void outputs_free(outputs *o)
{
    for (int i = 0; i < 5; i++)
        free(o->file[i]);
}

/* Run spec on nw16 + nw32 fresh workers (named after the round) and read the 4 PNGs and the
 * manifest back; the workers say BYE at the end. */
static int run_round(harness *h, int round, int nw16, int nw32, const char *spec, outputs *out,
                     char *id)
{
    farm f = {.first_level = 0, .last_level = 1, .nw = nw16 + nw32};
    for (int i = 0; i < f.nw; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%dw%d", round, i);
        if (harness_worker(h, &f.w[i], name, i < nw16 ? 0 : 1, 1) < 0) return -1;
    }
    void *cl = harness_dealer(h, 0, round ? "client1" : "client0");
    if (harness_submit(cl, spec, id, 64) < 0 || send_job_ref(cl, PROTO_WATCH, id) < 0 ||
        farm_run(h, &f, cl, 10000) < 0)
        return -1;
    for (int i = 0; i < 5; i++) {
        char path[1200];
        if (i < 4)
            snprintf(path, sizeof path, "%s/%s/%06d.png", h->dir, id, i);
        else
            snprintf(path, sizeof path, "%s/%s/manifest.jsonl", h->dir, id);
        out->file[i] = harness_read_file(path, &out->len[i]);
        if (!out->file[i]) return -1;
    }
    proto_msg bye = {.type = PROTO_BYE};
    for (int i = 0; i < f.nw; i++)
        harness_send(f.w[i].sock, &bye);
    return 0;
}

static void body_deterministic(harness *h, int *test_failed_)
{
    char spec[1024], id0[64], id1[64];
    outputs a = {0}, b = {0};
    snprintf(spec, sizeof spec, "count: 4\nseed: 3\nresolution: 32\nout: %s\n", h->dir);
    int rc0 = run_round(h, 0, 1, 1, spec, &a, id0);
    int rc1 = rc0 == 0 ? run_round(h, 1, 3, 2, spec, &b, id1) : -1;
    int same = rc1 == 0;
    for (int i = 0; same && i < 5; i++)
        same = a.len[i] == b.len[i] && memcmp(a.file[i], b.file[i], a.len[i]) == 0;
    outputs_free(&a);
    outputs_free(&b);
    CHECKF(rc0 == 0 && rc1 == 0, "rounds %d %d", rc0, rc1);
    CHECKF(!strcmp(id0, id1) && !strncmp(id0, "job-", 4) && strlen(id0) == 16, "%s %s", id0, id1);
    CHECK(same);
}

TEST(coord_outputs_do_not_depend_on_worker_count)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_deterministic(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}
