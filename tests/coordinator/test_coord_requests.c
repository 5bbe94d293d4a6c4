/* The coordinator's requests and scheduling over real libzmq: CANCEL drops queued and running
 * tasks, STATUS counts and SUBMIT errors, garbage and oversized frames on both sockets,
 * backpressure, keep_levels/resize, start_level, and byte-identical outputs whatever the number
 * of workers. */
#include "kernels/kernels.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

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
    CHECK(harness_get_task(w.sock, &t, 5000) == 0);
    CHECK(harness_job_ref(watcher, PROTO_WATCH, "cx") == 0);
    CHECK(harness_recv(watcher, &m, 5000) == 0 && m.type == PROTO_PROGRESS);
    CHECK(!strcmp(m.progress.state, "running") && m.progress.levels[0].running == 1);
    proto_msg_free(&m);
    CHECK(harness_job_ref(cl, PROTO_CANCEL, "cx") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_CANCELLED);
    proto_msg_free(&m);
    CHECK(harness_recv_type(watcher, PROTO_DONE, &m, 5000) == 0 &&
          !strcmp(m.done.state, "cancelled"));
    proto_msg_free(&m);

    /* its RESULT is ignored and no more of its tasks go out */
    CHECK(harness_result(w.sock, t.task, t.attempt, 1, t.image, 0, 16) == 0);
    CHECK(harness_ready(w.sock, 5, 1) == 0);
    CHECK(harness_recv(w.sock, &m, 300) < 0);
    CHECK(harness_status(cl, "cx", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECK(!strcmp(st->state, "cancelled") && st->done == 0 && st->levels[0].queued == 0 &&
          st->levels[0].running == 0);
    proto_msg_free(&m);
    CHECK(harness_job_ref(cl, PROTO_CANCEL, "cx") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR);
    proto_msg_free(&m);
    snprintf(path, sizeof path, "%s/cx/000000.png", h->dir);
    CHECK(!harness_file_exists(path));
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
    CHECK(harness_job_ref(cl, PROTO_STATUS, "nope") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_ERROR);
    proto_msg_free(&m);

    CHECK(harness_worker(h, &w, "w", 0, 2) == 0);
    snprintf(spec, sizeof spec, "name: sx\ncount: 4\nresolution: 32\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(expect_error(cl, spec, "already running") == 0);
    CHECK(harness_get_task(w.sock, &t[0], 5000) == 0 && harness_get_task(w.sock, &t[1], 5000) == 0);
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

/* A level whose worker said HELLO with ranks 3 (an MPI rank group) reports ranks 3 in STATUS,
 * a level of plain workers 1, a level with no worker 0; the group leaving takes it back to 0. */
static void body_status_ranks(harness *h, int *test_failed_)
{
    fake_worker plain;
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = "group",
                             .level = h->pipe.levels[1].name,
                             .host = "test",
                             .slots = 1,
                             .ranks = 3,
                             .pid = 2}};
    CHECK(harness_worker(h, &plain, "plain", 0, 1) == 0);
    void *group = harness_dealer(h, 1, "group"), *cl = harness_dealer(h, 0, "client");
    CHECK(harness_send(group, &m) == 0);
    CHECK(harness_recv(group, &m, 5000) == 0 && m.type == PROTO_WELCOME);
    proto_msg_free(&m);
    char spec[1024], id[256];
    snprintf(spec, sizeof spec, "name: rk\ncount: 1\nresolution: 64\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_status(cl, "rk", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_level_status *lv = m.status_reply.jobs[0].levels;
    CHECKF(m.status_reply.jobs[0].nlevels == 3 && lv[0].ranks == 1 && lv[1].ranks == 3 &&
               lv[2].ranks == 0,
           "ranks %u %u %u", lv[0].ranks, lv[1].ranks, lv[2].ranks);
    proto_msg_free(&m);
    m = (proto_msg){.type = PROTO_BYE};
    CHECK(harness_send(group, &m) == 0);
    for (int i = 0; i < 100; i++) { /* BYE and STATUS travel on different sockets */
        CHECK(harness_status(cl, "rk", &m) == 0 && m.type == PROTO_STATUS_REPLY);
        uint32_t r = m.status_reply.jobs[0].levels[1].ranks;
        proto_msg_free(&m);
        if (r == 0) break;
        CHECK(i < 99);
        harness_recv(cl, &m, 20); /* nothing comes: a 20 ms pause between polls */
    }
}

TEST(coord_status_names_a_levels_rank_groups)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_status_ranks(&h, test_failed_);
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
    CHECK(harness_sync_worker(h, wg, "wg", 1) == 0);

    /* a RESULT for no task, then a wrong-sized output: dropped, then retried */
    CHECK(harness_worker(h, &w, "w", 0, 1) == 0);
    CHECK(harness_result(w.sock, 12345, 1, 1, 0, 0, 16) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: bf\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_get_task(w.sock, &t, 5000) == 0 && t.attempt == 1);
    CHECK(harness_result(w.sock, t.task, 1, 1, 0, 0, 8) == 0 && harness_ready(w.sock, 1, 1) == 0);
    CHECK(harness_get_task(w.sock, &t, 5000) == 0 && t.attempt == 2);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "bf") == 0);
    CHECK(harness_result(w.sock, t.task, 2, 1, 0, 0, 16) == 0);
    CHECK(harness_recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "bp") == 0);
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "kl") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECK(f.nseen == 4);
    for (int i = 0; i < f.nseen; i++)
        CHECK(f.seen[i].resize == (f.seen[i].level == 1 ? 24 : 0));
    for (uint32_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/kl/%06u.png", h->dir, i);
        CHECK(harness_png_is(path, i, 1, 24));
        snprintf(path, sizeof path, "%s/kl/%06u.l16.png", h->dir, i);
        CHECK(harness_png_is(path, i, 0, 16) && harness_png_has_text(path, "strata:levels", "l16"));
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "sl") == 0);
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
    if (harness_submit(cl, spec, id, 64) < 0 || harness_job_ref(cl, PROTO_WATCH, id) < 0 ||
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
