/* TASKs lost between the coordinator and a worker (issue "Nothing lost"), with a fake worker
 * speaking the protocol over a real socket: READY carries the worker's absolute capacity and
 * the count of TASKs it received. A worker that says it holds nothing and counts fewer TASKs
 * than were sent to it gets the missing ones again at once, as no failure (losing the same task
 * more times than max_attempts still completes the image); a busy worker whose count matches
 * gets nothing more. */
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <string.h>

enum { READY_EVERY_MS = 200 };

/* READY (capacity, received) every READY_EVERY_MS, as an idle worker re-sends it, until a TASK
 * comes (into t; 0) or ms passed (-1). */
static int ready_until_task(void *sock, uint32_t capacity, uint32_t received, struct proto_task *t,
                            int ms)
{
    long long deadline = clock_now_ms() + ms;
    while (clock_now_ms() < deadline) {
        if (harness_ready(sock, capacity, received) < 0) return -1;
        if (harness_get_task(sock, t, READY_EVERY_MS) == 0) return 0;
    }
    return -1;
}

/* The job's one image done and none failed, its PNG holding the fake's pixels. */
static void job_done_clean(harness *h, void *cl, const char *job, int *test_failed_)
{
    proto_msg m;
    char path[1200];
    CHECK(harness_recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    CHECK(harness_status(cl, job, &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECKF(st->done == 1 && st->failed == 0, "done %u failed %u", st->done, st->failed);
    proto_msg_free(&m);
    snprintf(path, sizeof path, "%s/%s/000000.png", h->dir, job);
    CHECK(harness_png_is(path, 0, 0, 16));
}

static void body_lost(harness *h, int *test_failed_)
{
    fake_worker w;
    struct proto_task t, again;
    char spec[512], id[64];
    CHECK(harness_worker(h, &w, "w1", 0, 1) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: lost\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "lost") == 0);
    CHECK(harness_get_task(w.sock, &t, 5000) == 0 && t.attempt == 1);
    /* "lose" it max_attempts + 1 times: idle, 0 received; each time it comes back at once with
     * a new attempt */
    for (uint32_t k = 1; k <= 4; k++) {
        CHECKF(ready_until_task(w.sock, 1, 0, &again, 10000) == 0, "loss %u: no TASK again", k);
        CHECKF(again.task == t.task && again.attempt == t.attempt + k, "loss %u: task %llu.%u", k,
               (unsigned long long)again.task, again.attempt);
    }
    /* the coordinator forgot the lost ones (its count is 0 again): this one is kept, counted
     * and answered */
    CHECK(harness_result(w.sock, again.task, again.attempt, 1, again.image, 0, 16) == 0);
    CHECK(harness_ready(w.sock, 1, 1) == 0);
    job_done_clean(h, cl, "lost", test_failed_);
}

TEST(coord_lost_task_is_sent_again_at_once)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_lost(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}

static void body_busy(harness *h, int *test_failed_)
{
    fake_worker w;
    struct proto_task t, more;
    char spec[512], id[64];
    CHECK(harness_worker(h, &w, "w1", 0, 1) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: busy\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "busy") == 0);
    CHECK(harness_get_task(w.sock, &t, 5000) == 0 && t.attempt == 1);
    /* busy (capacity 0), the TASK counted: for 1.5 heartbeats nothing is sent again */
    CHECK(ready_until_task(w.sock, 0, 1, &more, 1500) < 0);
    /* idle again with the count right, its RESULT in: still nothing (the job has no more) */
    CHECK(harness_result(w.sock, t.task, t.attempt, 1, t.image, 0, 16) == 0);
    CHECK(ready_until_task(w.sock, 1, 1, &more, 1200) < 0);
    job_done_clean(h, cl, "busy", test_failed_);
}

TEST(coord_busy_worker_is_sent_nothing_again)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_busy(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}
