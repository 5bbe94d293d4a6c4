/* The coordinator over real libzmq (tcp://127.0.0.1:*): a job runs through fake workers to PNGs
 * and a sorted manifest; leases drop stale RESULTs; silent workers lose their tasks to others;
 * a task failing on 3 workers fails its image while the job goes on; a worker failing 3 tasks
 * of a job is kept off it. (Requests and scheduling: test_coord_requests.c.) */
#include "kernels/kernels.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "t1") == 0);
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
    CHECK(harness_png_has_text(path, "strata:job", "t1") &&
          harness_png_has_text(path, "strata:index", "1"));
    CHECK(harness_png_has_text(path, "strata:seed", "101") &&
          harness_png_has_text(path, "strata:levels", "l16,l32"));
    CHECK(harness_png_has_text(path, "strata:pipeline", "tiny"));
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "t1") == 0);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_PROGRESS && m.progress.done == 3);
    proto_msg_free(&m);
    CHECK(harness_recv(cl, &m, 5000) == 0 && m.type == PROTO_DONE && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    harness_halt(h);
    CHECK(harness_recv_type(f.w[0].sock, PROTO_SHUTDOWN, &m, 5000) == 0);
    proto_msg_free(&m);
    CHECK(harness_recv_type(f.w[1].sock, PROTO_SHUTDOWN, &m, 5000) == 0);
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

static void body_stale(harness *h, int *test_failed_)
{
    fake_worker w, w2;
    struct proto_task t1, t2;
    char spec[1024], id[256], path[1200];
    CHECK(harness_worker(h, &w, "w1", 0, 1) == 0);
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: st\ncount: 1\nseed: 5\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_get_task(w.sock, &t1, 5000) == 0 && t1.attempt == 1);
    /* the only worker fails it: it comes back to the same worker with attempt 2 */
    CHECK(harness_result(w.sock, t1.task, 1, 0, 0, 0, 16) == 0 && harness_ready(w.sock, 1, 1) == 0);
    CHECK(harness_get_task(w.sock, &t2, 5000) == 0 && t2.task == t1.task && t2.attempt == 2);

    /* another worker answering the current lease, then the old attempt: both dropped */
    CHECK(harness_worker(h, &w2, "w2", 0, 0) == 0);
    CHECK(harness_result(w2.sock, t2.task, 2, 1, 0, 6, 16) == 0);
    CHECK(harness_sync_worker(h, w2.sock, "w2", 0) == 0);
    CHECK(harness_result(w.sock, t1.task, 1, 1, 0, 5, 16) == 0);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "st") == 0);
    CHECK(harness_result(w.sock, t2.task, 2, 1, 0, 0, 16) == 0);
    proto_msg m;
    CHECK(harness_recv_type(cl, PROTO_DONE, &m, 5000) == 0 && !strcmp(m.done.state, "done"));
    proto_msg_free(&m);
    snprintf(path, sizeof path, "%s/st/000000.png", h->dir);
    CHECK(harness_png_is(path, 0, 0, 16)); /* attempt 2's pixels, not the stale ones */

    /* a duplicate RESULT after completion changes nothing */
    CHECK(harness_result(w.sock, t2.task, 2, 1, 0, 7, 16) == 0);
    CHECK(harness_sync_worker(h, w.sock, "w1", 0) == 0);
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
    CHECK(harness_get_task(f.w[0].sock, &t, 5000) == 0 && t.attempt == 1);
    CHECK(harness_worker(h, &f.w[1], "wb", 0, 1) == 0);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "sw") == 0);
    CHECK(farm_run(h, &f, cl, 10000) == 0 && !strcmp(f.done_state, "done"));
    CHECKF(f.nseen == 1 && f.seen[0].worker == 1 && f.seen[0].task == t.task &&
               f.seen[0].attempt == 2,
           "%d tasks", f.nseen);
    /* the forgotten worker's late RESULT is dropped; it may join again */
    CHECK(harness_result(f.w[0].sock, t.task, 1, 1, 0, 5, 16) == 0);
    CHECK(harness_sync_worker(h, f.w[0].sock, "wa", 0) == 0);
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "tf") == 0);
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
    CHECK(!harness_file_exists(path));
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "one") == 0);
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

/* docs/design.md section 6: a worker that fails 3 tasks of a job is kept off it; the job goes
 * on. */
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
    CHECK(harness_job_ref(cl, PROTO_WATCH, "kept") == 0);
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

/* The only worker of a level fails every task: once it is kept off the job, the images still
 * queued fail without a lease, and the level's counts (coord_check, on in the harness) and the
 * job's end stay right. It once left them counted as queued and the check aborted. */
static void body_only_bad_worker(harness *h, int *test_failed_)
{
    farm f = {.first_level = 0, .last_level = 0, .nw = 1};
    char spec[1024], id[256];
    CHECK(harness_worker(h, &f.w[0], "bad", 0, 1) == 0);
    f.w[0].fail_image = FAKE_FAIL_ALL;
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "name: kept2\ncount: 4\nresolution: 16\nout: %s\n", h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "kept2") == 0);
    int rc = farm_run(h, &f, cl, 10000);
    CHECKF(rc == 0 && !strcmp(f.done_state, "failed"), "farm_run %d state %s", rc, f.done_state);
}

TEST(coord_only_worker_kept_off_fails_the_rest_cleanly)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    body_only_bad_worker(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}
