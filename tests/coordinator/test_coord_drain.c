/* A worker that drains (READY draining, issue "Operating a farm"), with fake workers over real
 * sockets: the coordinator sends it nothing more, not even when its count of TASKs received is
 * short (a TASK that came after it began draining is not taken); it takes its RESULT; on its BYE
 * the task it did not take goes to another worker as no loss and no failure. */
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <string.h>

static int ready_draining(void *sock, uint32_t received)
{
    proto_msg m = {.type = PROTO_READY, .ready = {.received = received, .draining = true}};
    return harness_send(sock, &m);
}

static void body_drain(harness *h, int *test_failed_)
{
    fake_worker a, b;
    struct proto_task t1, t2, again, none;
    char spec[512], id[64], path[1200];
    proto_msg m;
    CHECK(harness_worker(h, &a, "a", 0, 2) == 0 && harness_worker(h, &b, "b", 0, 0) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: dr\ncount: 2\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "dr") == 0);
    CHECK(harness_get_task(a.sock, &t1, 5000) == 0 && harness_get_task(a.sock, &t2, 5000) == 0);
    /* a drains: it holds t1; t2 came after it began, not taken (1 received of 2 sent) */
    long long until = clock_now_ms() + 1500;
    int sent_more = 0;
    while (!sent_more && clock_now_ms() < until) {
        CHECK(ready_draining(a.sock, 1) == 0);
        sent_more = harness_get_task(a.sock, &none, 200) == 0;
    }
    CHECKF(!sent_more, "task %llu went to the draining worker", (unsigned long long)none.task);
    CHECK(harness_result(a.sock, t1.task, t1.attempt, 1, t1.image, 0, 16) == 0);
    CHECK(ready_draining(a.sock, 1) == 0);
    m = (proto_msg){.type = PROTO_BYE};
    CHECK(harness_send(a.sock, &m) == 0);
    /* b gets t2 again, a new attempt */
    CHECK(harness_ready(b.sock, 1, 0) == 0);
    CHECK(harness_get_task(b.sock, &again, 5000) == 0);
    CHECKF(again.task == t2.task && again.attempt == t2.attempt + 1, "task %llu.%u",
           (unsigned long long)again.task, again.attempt);
    CHECK(harness_result(b.sock, again.task, again.attempt, 1, again.image, 0, 16) == 0);
    CHECK(harness_recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    CHECK(harness_status(cl, "dr", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    CHECKF(st->done == 2 && st->failed == 0, "done %u failed %u", st->done, st->failed);
    proto_msg_free(&m);
    for (uint32_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/dr/%06u.png", h->dir, i);
        CHECKF(harness_png_is(path, i, 0, 16), "%s", path);
    }
}

TEST(coord_draining_worker_gets_nothing_more)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_drain(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}
