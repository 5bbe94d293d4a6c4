/* coord_check on a state built by hand from the coordinator's parts (queue, registry, job
 * table): it passes on a consistent state and names each invariant broken on purpose (a
 * worker's credits changed behind the registry's back, a lease counted twice or not at all, a
 * job's counts off by one, a task leased to a worker that is gone, a queued task in no queue,
 * writes that do not add up); with the check on, a broken state aborts the process with that
 * name; with it off, nothing runs. */
#include "coordinator/coord_internal.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* One worker w1 of level l16 with 2 credits, then job j1 (2 images, levels l16 and l32): image
 * 0 leased to w1 (1 credit left), image 1 queued. */
typedef struct built {
    struct coord c;
    coord_job *job;
    int64_t leased, queued;
} built;

static int build(built *b)
{
    memset(b, 0, sizeof *b);
    struct coord *c = &b->c;
    c->pipe = harness_pipeline();
    c->o.check = 1;
    if (coord_queue_new(1, &c->queue) < 0 || coord_registry_new(3, &c->workers) < 0 ||
        coord_jobs_new(&c->jobs) < 0)
        return -1;
    proto_rid rid = {.len = 2, .id = "w1"};
    int w = coord_registry_add(c->workers, &rid, "w1", 0, 0);
    coord_job *j = coord_job_new();
    if (w < 0 || !j) return -1;
    coord_registry_ready(c->workers, (uint32_t)w, 2, 0, 0);
    snprintf(j->id, sizeof j->id, "j1");
    j->count = 2;
    j->end = 2;
    j->arrival = coord_jobs_arrival(c->jobs);
    if (coord_jobs_add(c->jobs, j) < 0) return -1;
    b->job = j;
    for (int i = 0; i < 2; i++) {
        uint32_t image = coord_job_image_started(j);
        int64_t s = coord_queue_start(c->queue, j, image, 0, j->arrival, 0);
        if (s < 0 || coord_queue_push(c->queue, (uint32_t)s, 0) < 0) return -1;
        coord_job_task_queued(j, 0);
    }
    b->leased = coord_queue_pop(c->queue, 0);
    if (b->leased < 0) return -1;
    b->queued = 1 - b->leased; /* the two slots are 0 and 1 */
    coord_registry_lease(c->workers, (uint32_t)w);
    coord_queue_lease(c->queue, (uint32_t)b->leased, coord_registry_at(c->workers, 0)->serial);
    coord_job_task_leased(j, 0);
    return 0;
}

static void unbuild(built *b)
{
    coord_queue_destroy(&b->c.queue);
    coord_registry_destroy(&b->c.workers);
    coord_jobs_destroy(&b->c.jobs);
}

/* The message coord_check gives on b (built, then broken by `how`), "" when it passes. */
typedef void (*breaker)(built *b);

static void check_message(breaker how, char *msg, size_t len)
{
    built b;
    strata_err e = {0};
    snprintf(msg, len, "build failed");
    if (build(&b) == 0) {
        if (how) how(&b);
        snprintf(msg, len, "%s", coord_check(&b.c, &e) == 0 ? "" : e.msg);
    }
    unbuild(&b);
}

static void credits_behind_the_registry(built *b)
{
    ((coord_worker *)coord_registry_at(b->c.workers, 0))->credits++;
}

static void lease_uncounted(built *b)
{
    coord_registry_lease_end(b->c.workers, coord_registry_at(b->c.workers, 0)->serial);
}

static void queued_twice(built *b)
{
    coord_job_task_queued(b->job, 0);
}

static void worker_gone(built *b)
{
    coord_registry_remove(b->c.workers, 0);
}

static void queued_nowhere(built *b)
{
    coord_queue_lease_end(b->c.queue, (uint32_t)b->leased);
    coord_job_task_unleased(b->job, 0);
    coord_job_task_queued(b->job, 0);
    coord_registry_lease_end(b->c.workers, coord_registry_at(b->c.workers, 0)->serial);
}

static void image_done_still_in_flight(built *b)
{
    coord_job_image_finished(b->job, 1);
}

static void write_unaccounted(built *b)
{
    b->c.writes++;
}

TEST(coord_check_names_each_broken_invariant)
{
    static const struct {
        breaker how;
        const char *want;
    } cases[] = {
        {credits_behind_the_registry,
         "credits: level 0's workers hold 2 credits, its total says 1"},
        {lease_uncounted, "worker w1: 0 tasks running counted, 1 leased to it"},
        {queued_twice, "job j1 level 0: counts 2 queued, 1 running; the queue holds 1 queued"},
        {worker_gone, "leased to worker #1, which is gone"},
        {queued_nowhere, "is queued but in no queue"},
        {image_done_still_in_flight, "job j1: 1 images in flight counted, 2 in the queue"},
        {write_unaccounted, "writes: jobs wait for 0, the pool holds 1"},
    };
    char msg[512];
    check_message(NULL, msg, sizeof msg);
    CHECKF(msg[0] == 0, "the consistent state fails: %s", msg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_message(cases[i].how, msg, sizeof msg);
        CHECKF(strstr(msg, cases[i].want), "case %zu: want \"%s\", got \"%s\"", i, cases[i].want,
               msg);
    }
}

/* With the check on, coord_check_after on a broken state aborts with the invariant's name. */
static void abort_child(int fd)
{
    built b;
    dup2(fd, 2);
    if (build(&b) < 0) _exit(3);
    credits_behind_the_registry(&b);
    coord_check_after(&b.c, "a test event");
    _exit(0); /* not reached when the check works */
}

TEST(coord_check_aborts_naming_the_invariant)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) abort_child(fds[1]);
    close(fds[1]);
    char out[1024] = "";
    size_t used = 0;
    ssize_t n;
    while (used + 1 < sizeof out && (n = read(fds[0], out + used, sizeof out - 1 - used)) > 0)
        used += (size_t)n;
    out[used] = 0;
    close(fds[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %d", status);
    CHECKF(strstr(out, "coordinator: invariant broken after a test event: credits: level 0"), "%s",
           out);
}

/* With the check off, coord_check_after neither counts nor looks; on, it counts each run. */
TEST(coord_check_counts_only_when_on)
{
    built b;
    CHECK(build(&b) == 0);
    credits_behind_the_registry(&b);
    b.c.o.check = 0;
    coord_check_after(&b.c, "a test event"); /* broken, but off: no abort */
    uint64_t off = b.c.checks;
    ((coord_worker *)coord_registry_at(b.c.workers, 0))->credits--; /* consistent again */
    b.c.o.check = 1;
    coord_check_after(&b.c, "a test event");
    coord_check_after(&b.c, "a test event");
    uint64_t on = b.c.checks;
    unbuild(&b);
    CHECKF(off == 0 && on == 2, "off %llu, on %llu", (unsigned long long)off,
           (unsigned long long)on);
}
