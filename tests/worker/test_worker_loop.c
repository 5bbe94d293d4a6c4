/* The worker process (`strata worker`) against a coordinator played by the test: a ROUTER on
 * tcp://127.0.0.1, a real child process. HELLO / WELCOME / READY / TASK / RESULT, results equal
 * to level_run in this process, failures that do not stop the worker, heartbeats during a slow
 * task, re-HELLO after coordinator silence, SHUTDOWN, SIGTERM, bad WELCOME and bad flags. */
#include "proto/proto.h"
#include "tests/test.h"
#include "worker/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define GEN_MODEL "tests/fixtures/unet/small3/model"
#define SR_MODEL "tests/fixtures/unet/sr/model"

enum { WAIT_MS = 30000 }; /* generous: the machine is shared, and ASan is slow */

/* ---------------------------------------------------------------- a child process */

/* Start STRATA_BIN with args (NULL-terminated), stderr to a pipe (*errfd), stdout discarded. */
static pid_t child_spawn(const char *const *args, int *errfd)
{
    const char *bin = getenv("STRATA_BIN");
    const char *argv[32];
    int n = 0, fds[2];
    argv[n++] = bin ? bin : "build/strata";
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    if (pipe(fds)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    *errfd = fds[0];
    return pid;
}

/* Wait up to timeout_ms for the child to exit, collecting its stderr into err; kill it when
 * late. Returns its exit code, or -1 (killed, or died of a signal). Closes errfd. */
static int child_wait(pid_t pid, int errfd, int timeout_ms, char *err, size_t len)
{
    size_t used = strlen(err);
    long long deadline = clock_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - clock_now_ms();
        struct pollfd p = {errfd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            kill(pid, SIGKILL);
            break;
        }
        char buf[1024];
        ssize_t got = read(errfd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* EOF: the child is gone */
        size_t take = (size_t)got < len - 1 - used ? (size_t)got : len - 1 - used;
        memcpy(err + used, buf, take);
        used += take;
        err[used] = 0;
    }
    close(errfd);
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---------------------------------------------------------------- a fake coordinator */

typedef struct coord_fake {
    void *ctx, *router;
    char ep[256];
    proto_rid worker;
    pid_t pid;
    int errfd;
    int echo;                 /* answer each HEARTBEAT with one (a live coordinator) */
    int heartbeats;           /* HEARTBEATs seen */
    struct proto_ready ready; /* the last READY seen */
    char err[8192];           /* the child's stderr, once it exited */
} coord_fake;

static int coord_open(coord_fake *c)
{
    memset(c, 0, sizeof *c);
    c->pid = -1;
    c->echo = 1;
    proto_sock_opts o = {.linger_ms = -1};
    strata_err e;
    c->ctx = zmq_ctx_new();
    if (proto_router_bind(c->ctx, "tcp://127.0.0.1:*", &o, &c->router, &e)) return -1;
    return proto_sock_endpoint(c->router, c->ep, sizeof c->ep, &e);
}

/* Start `strata worker --level LEVEL --connect EP --threads 1 [--model MODEL] [extra...]`
 * (model NULL: a stub, extra says --stub-ms). */
static int coord_spawn(coord_fake *c, const char *level, const char *model,
                       const char *const *extra)
{
    const char *args[24] = {"worker", "--level", level, "--connect", c->ep, "--threads", "1"};
    int n = 7;
    if (model) args[n++] = "--model", args[n++] = model;
    for (int i = 0; extra && extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    c->pid = child_spawn(args, &c->errfd);
    return c->pid > 0 ? 0 : -1;
}

/* Receive until a message of type arrives (into m; the caller frees it), counting HEARTBEATs
 * on the way and passing the READYs an idle worker sends each heartbeat (the last one is kept in
 * c->ready). Any other message, or none in timeout_ms, is a failure (-1). */
static int coord_expect(coord_fake *c, enum proto_type type, int timeout_ms, proto_msg *m)
{
    long long deadline = clock_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - clock_now_ms();
        strata_err e = {0};
        if (left < 0 || proto_recv(c->router, &c->worker, m, (int)left, &e)) {
            fprintf(stderr, "    waiting for %s: %s\n", proto_type_name(type), e.msg);
            return -1;
        }
        if (m->type == PROTO_READY) c->ready = m->ready;
        if (m->type == type) return 0;
        if (m->type != PROTO_HEARTBEAT && m->type != PROTO_READY) {
            fprintf(stderr, "    waiting for %s, got %s\n", proto_type_name(type),
                    proto_type_name(m->type));
            proto_msg_free(m);
            return -1;
        }
        c->heartbeats += m->type == PROTO_HEARTBEAT;
        proto_msg_free(m);
        /* the echo may find the worker gone already: a draining worker sends its last READY or
         * HEARTBEAT, then BYE, and exits, and the BYE is still to be read here */
        proto_msg hb = {.type = PROTO_HEARTBEAT};
        if (c->echo) proto_send(c->router, &c->worker, &hb, &e);
    }
}

/* Receive until n more HEARTBEATs arrived (an idle worker's READYs pass); anything else, or a
 * timeout, is a failure. */
static int coord_heartbeats(coord_fake *c, int n, int timeout_ms)
{
    long long deadline = clock_now_ms() + timeout_ms;
    for (int want = c->heartbeats + n; c->heartbeats < want;) {
        proto_msg m;
        strata_err e = {0};
        long long left = deadline - clock_now_ms();
        if (left < 0 || proto_recv(c->router, &c->worker, &m, (int)left, &e)) return -1;
        int hb = m.type == PROTO_HEARTBEAT, ready = m.type == PROTO_READY;
        proto_msg_free(&m);
        if (!hb && !ready) return -1;
        c->heartbeats += hb;
    }
    return 0;
}

static int coord_send(coord_fake *c, const proto_msg *m)
{
    strata_err e;
    return proto_send(c->router, &c->worker, m, &e);
}

/* Send m and expect the RESULT that answers it (then the READY that follows). */
static int coord_run_task(coord_fake *c, const proto_msg *task, proto_msg *result)
{
    proto_msg ready;
    if (coord_send(c, task) || coord_expect(c, PROTO_RESULT, WAIT_MS, result)) return -1;
    if (coord_expect(c, PROTO_READY, WAIT_MS, &ready)) return -1;
    proto_msg_free(&ready);
    return 0;
}

/* Wait for the child's exit code (killing it when late). */
static int coord_wait_exit(coord_fake *c, int timeout_ms)
{
    if (c->pid <= 0) return -1;
    int code = child_wait(c->pid, c->errfd, timeout_ms, c->err, sizeof c->err);
    c->pid = -1;
    return code;
}

static void coord_close(coord_fake *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        coord_wait_exit(c, WAIT_MS);
    }
    proto_sock_close(&c->router);
    if (c->ctx) zmq_ctx_term(c->ctx);
    c->ctx = NULL;
}

/* HELLO (checked: level, pid, one slot) then WELCOME with config, then READY. */
static int coord_welcome(coord_fake *c, const char *level, const proto_level_config *config)
{
    proto_msg m;
    if (coord_expect(c, PROTO_HELLO, WAIT_MS, &m)) return -1;
    int ok = !strcmp(m.hello.level, level) && m.hello.pid == (uint32_t)c->pid &&
             m.hello.slots == 1 && m.hello.ranks == 1 && m.hello.worker && m.hello.host;
    proto_msg_free(&m);
    if (!ok) return -1;
    proto_msg w = {.type = PROTO_WELCOME, .welcome = {.config = *config}};
    if (coord_send(c, &w) || coord_expect(c, PROTO_READY, WAIT_MS, &m)) return -1;
    ok = m.ready.capacity == 1 && m.ready.received == 0 && !m.ready.draining;
    proto_msg_free(&m);
    return ok ? 0 : -1;
}

/* SHUTDOWN -> BYE -> exit code. */
static int coord_shutdown(coord_fake *c)
{
    proto_msg m = {.type = PROTO_SHUTDOWN};
    if (coord_send(c, &m) || coord_expect(c, PROTO_BYE, WAIT_MS, &m)) return -1;
    proto_msg_free(&m);
    return coord_wait_exit(c, WAIT_MS);
}

/* ---------------------------------------------------------------- levels */

typedef struct level_setup {
    const char *model, *mode;
    int index, side, steps, noise_level, hb, liveness;
    double guidance;
} level_setup;

/* WELCOME's config for s (s->model is the worker's --model, not sent). */
static void level_config(const level_setup *s, proto_level_config *p)
{
    *p = (proto_level_config){.index = (uint32_t)s->index,
                              .side = s->side,
                              .steps = s->steps,
                              .sampler = "",
                              .noise_level = s->noise_level,
                              .guidance = (float)s->guidance,
                              .heartbeat_ms = s->hb,
                              .liveness = s->liveness};
    level_kind_parse(s->mode, &p->kind);
}

/* The same level run in this process: what the worker must send back. */
static int level_expected(const level_setup *s, const level_task *t, uint8_t *out, strata_err *e)
{
    level_params p = {.index = (uint32_t)s->index,
                      .side = s->side,
                      .steps = s->steps,
                      .noise_level = s->noise_level,
                      .guidance = (float)s->guidance};
    level_kind_parse(s->mode, &p.kind);
    unet_t *m = NULL;
    int rc = worker_model_scheduler(s->model, "", 0.0f, &p.sched, e);
    if (!rc) rc = unet_load(s->model, &m, e);
    if (!rc) rc = level_run(m, &p, t, out, e);
    unet_free(m);
    return rc;
}

static proto_msg task_msg(uint64_t task, uint32_t attempt, const char *level, uint64_t seed,
                          uint32_t image, int class_label)
{
    return (proto_msg){.type = PROTO_TASK,
                       .task = {.task = task,
                                .attempt = attempt,
                                .job = "job-1",
                                .image = image,
                                .seed = seed,
                                .level = level,
                                .level_index = 0,
                                .class_label = class_label}};
}

static proto_tensor rgb_tensor(const uint8_t *data, int side)
{
    uint64_t s = (uint64_t)side;
    return (proto_tensor){.dtype = PROTO_DTYPE_U8,
                          .ndim = 3,
                          .shape = {s, s, 3},
                          .data = data,
                          .nbytes = (size_t)(s * s * 3)};
}

/* 1 when r is an ok RESULT for (task, attempt) holding exactly want (side x side x 3). */
static int result_is(const proto_msg *r, uint64_t task, uint32_t attempt, const uint8_t *want,
                     int side)
{
    const proto_tensor *o = &r->result.output;
    if (!r->result.ok) fprintf(stderr, "    RESULT error: %s\n", r->result.error);
    return r->result.ok && r->result.task == task && r->result.attempt == attempt &&
           o->dtype == PROTO_DTYPE_U8 && o->ndim == 3 && o->shape[0] == (uint64_t)side &&
           o->shape[1] == (uint64_t)side && o->shape[2] == 3 &&
           memcmp(o->data, want, (size_t)side * side * 3) == 0;
}

/* ---------------------------------------------------------------- tests */

TEST(worker_loop_generate_matches_level_run)
{
    level_setup s = {GEN_MODEL, "generate", 0, 16, 2, 0, 200, 50, 2.5};
    level_task t = {.seed = 7, .image = 3, .class_label = 2};
    uint8_t want[16 * 16 * 3];
    strata_err e = {0};
    CHECKF(level_expected(&s, &t, want, &e) == 0, "%s", e.msg);

    coord_fake c;
    proto_level_config config;
    proto_msg r;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    proto_msg task = task_msg(11, 1, "l16", 7, 3, 2);
    CHECK(coord_run_task(&c, &task, &r) == 0);
    int same = result_is(&r, 11, 1, want, 16);
    proto_msg_free(&r);
    CHECKF(same, "the worker's image differs from level_run's");
    /* a retry of the same task gives the same bytes */
    task.task.attempt = 2;
    CHECK(coord_run_task(&c, &task, &r) == 0);
    same = result_is(&r, 11, 2, want, 16);
    proto_msg_free(&r);
    CHECKF(same, "a second run of the task differs");
    int code = coord_shutdown(&c);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    coord_close(&c);
}

TEST(worker_loop_refine_resize_and_failures)
{
    level_setup s = {SR_MODEL, "refine", 1, 32, 2, 50, 200, 50, 1.0};
    uint8_t cond[16 * 16 * 3], want[32 * 32 * 3], small[24 * 24 * 3];
    for (int i = 0; i < 16 * 16 * 3; i++)
        cond[i] = (uint8_t)(i * 37 % 251);
    level_task t = {.seed = 5, .image = 9, .cond = cond, .cond_side = 16, .class_label = -1};
    strata_err e = {0};
    CHECKF(level_expected(&s, &t, want, &e) == 0, "%s", e.msg);
    CHECKF(worker_image_resize(want, 32, small, 24, &e) == 0, "%s", e.msg);

    coord_fake c;
    proto_level_config config;
    proto_msg r;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l32", s.model, NULL) == 0);
    CHECK(coord_welcome(&c, "l32", &config) == 0);
    proto_msg task = task_msg(21, 1, "l32", 5, 9, -1);
    /* no cond: the task fails, the worker goes on */
    CHECK(coord_run_task(&c, &task, &r) == 0);
    int failed = !r.result.ok && r.result.task == 21 && strstr(r.result.error, "image");
    proto_msg_free(&r);
    CHECKF(failed, "a refine task without cond did not fail as expected");
    /* the wrong level: refused at once */
    proto_msg wrong = task_msg(22, 1, "l64", 5, 9, -1);
    CHECK(coord_run_task(&c, &wrong, &r) == 0);
    failed = !r.result.ok && strstr(r.result.error, "l64");
    proto_msg_free(&r);
    CHECKF(failed, "a task for another level was not refused");

    /* a cond that is not [side, side, 3]: refused at once */
    proto_msg flat = task_msg(23, 1, "l32", 5, 9, -1);
    flat.task.cond = (proto_tensor){
        .dtype = PROTO_DTYPE_U8, .ndim = 2, .shape = {16, 48}, .data = cond, .nbytes = sizeof cond};
    CHECK(coord_run_task(&c, &flat, &r) == 0);
    failed = !r.result.ok && strstr(r.result.error, "cond");
    proto_msg_free(&r);
    CHECKF(failed, "a malformed cond was not refused");

    task.task.cond = rgb_tensor(cond, 16);
    CHECK(coord_run_task(&c, &task, &r) == 0);
    int same = result_is(&r, 21, 1, want, 32);
    proto_msg_free(&r);
    CHECKF(same, "the refined image differs from level_run's");
    task.task.params.resize = 24;
    task.task.attempt = 2;
    CHECK(coord_run_task(&c, &task, &r) == 0);
    same = result_is(&r, 21, 2, small, 24);
    proto_msg_free(&r);
    CHECKF(same, "the resized image differs");

    /* it counted the five TASKs; SIGTERM while it holds none: READY draining, BYE at once */
    CHECKF(c.ready.received == 5 && c.ready.capacity == 1, "READY received %u capacity %u",
           c.ready.received, c.ready.capacity);
    proto_msg bye;
    CHECK(kill(c.pid, SIGTERM) == 0);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &bye) == 0);
    proto_msg_free(&bye);
    CHECKF(c.ready.draining && c.ready.capacity == 0, "no READY draining before BYE");
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    coord_close(&c);
}

TEST(worker_loop_heartbeats_during_a_slow_task)
{
    level_setup s = {"no-model-in-stub-mode", "generate", 0, 16, 2, 0, 200, 50, 1.0};
    const char *extra[] = {"--stub-ms", "2500", NULL};
    coord_fake c;
    proto_level_config config;
    proto_msg r;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", NULL, extra) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    proto_msg task = task_msg(31, 1, "l16", 4, 0, -1);
    c.heartbeats = 0;
    CHECK(coord_run_task(&c, &task, &r) == 0);
    uint8_t grey[16 * 16 * 3];
    memset(grey, 64 + 4 % 128, sizeof grey);
    int ok = result_is(&r, 31, 1, grey, 16) && r.result.elapsed_ms >= 2500;
    proto_msg_free(&r);
    CHECKF(ok, "the stub's RESULT is not a flat grey 16x16 after 2500 ms");
    /* 2500 ms of work at one heartbeat per 200 ms: 12 expected, allow for a slow machine */
    CHECKF(c.heartbeats >= 8, "%d heartbeats during the task", c.heartbeats);

    /* SHUTDOWN in the middle of a task: the task is abandoned, the exit is prompt */
    task.task.attempt = 2;
    long long t0 = clock_now_ms();
    CHECK(coord_send(&c, &task) == 0);
    int code = coord_shutdown(&c);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    CHECKF(clock_now_ms() - t0 < 2500, "the stop waited for the task (%lld ms)",
           clock_now_ms() - t0);
    coord_close(&c);
}

TEST(worker_loop_sigint_abandons_a_running_level)
{
    /* 1000 steps at 128x128: minutes of work, still running when the signal comes */
    level_setup s = {GEN_MODEL, "generate", 0, 128, 1000, 0, 100, 100, 1.0};
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l128", s.model, NULL) == 0);
    CHECK(coord_welcome(&c, "l128", &config) == 0);
    proto_msg task = task_msg(51, 1, "l128", 1, 0, -1);
    CHECK(coord_send(&c, &task) == 0);
    /* two heartbeats after the TASK: it reached the compute thread, and the loop still beats */
    CHECK(coord_heartbeats(&c, 2, WAIT_MS) == 0);
    long long t0 = clock_now_ms();
    CHECK(kill(c.pid, SIGINT) == 0);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    CHECKF(clock_now_ms() - t0 < 10000, "the stop took %lld ms", clock_now_ms() - t0);
    coord_close(&c);
}

/* SIGTERM mid-task drains: READY says so at once, a TASK sent after it is not taken, the task
 * held is finished and its RESULT sent, then BYE and exit 0. */
TEST(worker_loop_sigterm_drains_the_task_held)
{
    level_setup s = {"no-model-in-stub-mode", "generate", 0, 16, 2, 0, 200, 50, 1.0};
    const char *extra[] = {"--stub-ms", "1500", NULL};
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", NULL, extra) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    proto_msg task = task_msg(61, 1, "l16", 4, 0, -1), late = task_msg(62, 1, "l16", 4, 1, -1);
    CHECK(coord_send(&c, &task) == 0);
    /* a heartbeat after the TASK: it is at the compute thread (an idle worker sends READY) */
    CHECK(coord_heartbeats(&c, 1, WAIT_MS) == 0);
    CHECK(kill(c.pid, SIGTERM) == 0);
    CHECK(coord_expect(&c, PROTO_READY, WAIT_MS, &m) == 0);
    int said = m.ready.draining && m.ready.capacity == 0 && m.ready.received == 1;
    proto_msg_free(&m);
    CHECKF(said, "READY after SIGTERM: draining %d capacity %u received %u", c.ready.draining,
           c.ready.capacity, c.ready.received);
    CHECK(coord_send(&c, &late) == 0);
    CHECK(coord_expect(&c, PROTO_RESULT, WAIT_MS, &m) == 0);
    int ok = m.result.ok && m.result.task == 61;
    proto_msg_free(&m);
    CHECKF(ok, "%s", "the task held was not finished");
    /* BYE next: coord_expect fails on any RESULT (the late TASK's) on the way */
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    CHECKF(c.ready.draining && c.ready.received == 1, "received %u", c.ready.received);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    CHECKF(strstr(c.err, "draining") && strstr(c.err, "not taken"), "stderr: %s", c.err);
    coord_close(&c);
}

/* A second SIGTERM while draining stops at once: the 60 s task is abandoned, BYE, exit 0 (well
 * within WAIT_MS, which a worker finishing its task would overrun). */
TEST(worker_loop_second_sigterm_stops_at_once)
{
    level_setup s = {"no-model-in-stub-mode", "generate", 0, 16, 2, 0, 200, 50, 1.0};
    const char *extra[] = {"--stub-ms", "60000", NULL};
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", NULL, extra) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    proto_msg task = task_msg(71, 1, "l16", 4, 0, -1);
    CHECK(coord_send(&c, &task) == 0);
    CHECK(coord_heartbeats(&c, 1, WAIT_MS) == 0);
    CHECK(kill(c.pid, SIGTERM) == 0);
    /* the first one was taken (two signals sent at once could merge into one) */
    CHECK(coord_expect(&c, PROTO_READY, WAIT_MS, &m) == 0 && m.ready.draining);
    proto_msg_free(&m);
    CHECK(kill(c.pid, SIGTERM) == 0);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    coord_close(&c);
}

TEST(worker_loop_says_hello_again_after_coordinator_silence)
{
    level_setup s = {GEN_MODEL, "generate", 0, 16, 2, 0, 100, 3, 1.0};
    level_task t = {.seed = 3, .image = 1, .class_label = -1};
    uint8_t want[16 * 16 * 3];
    strata_err e = {0};
    CHECKF(level_expected(&s, &t, want, &e) == 0, "%s", e.msg);
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    /* a silent coordinator (no heartbeats back): after 3 x 100 ms the worker says HELLO */
    c.echo = 0;
    CHECK(coord_expect(&c, PROTO_HELLO, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    /* a restarted coordinator welcomes it again; it serves as before */
    c.echo = 1;
    proto_msg w = {.type = PROTO_WELCOME, .welcome = {.config = config}};
    CHECK(coord_send(&c, &w) == 0 && coord_expect(&c, PROTO_READY, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    proto_msg task = task_msg(41, 1, "l16", 3, 1, -1);
    CHECK(coord_run_task(&c, &task, &m) == 0);
    int same = result_is(&m, 41, 1, want, 16);
    proto_msg_free(&m);
    CHECKF(same, "the image after re-WELCOME differs");
    int code = coord_shutdown(&c);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    coord_close(&c);
}

TEST(worker_loop_bad_welcome_exits_2)
{
    /* 0 steps: a setting no worker can run */
    level_setup s = {GEN_MODEL, "generate", 0, 16, 0, 0, 200, 50, 1.0};
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_expect(&c, PROTO_HELLO, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    proto_msg w = {.type = PROTO_WELCOME, .welcome = {.config = config}};
    CHECK(coord_send(&c, &w) == 0);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 2, "exit %d: %s", code, c.err);
    char *nl = strchr(c.err, '\n');
    CHECKF(strstr(c.err, "'steps'") && nl && !nl[1], "stderr: %s", c.err);
    coord_close(&c);
}

/* A WELCOME that does not decode is a level the worker cannot serve: it stops with the field
 * named, as for a bad setting, rather than dropping the frame and waiting. */
TEST(worker_loop_undecodable_welcome_exits_2)
{
    level_setup s = {GEN_MODEL, "generate", 0, 16, 2, 0, 200, 50, 1.0};
    coord_fake c;
    proto_msg m, w = {.type = PROTO_WELCOME};
    void *buf = NULL;
    size_t len = 0;
    level_config(&s, &w.welcome.config);
    CHECK(proto_encode(&w, &buf, &len, NULL) == 0);
    char *mode = memmem(buf, len, "generate", 8);
    CHECK(mode);
    mode[3] = '3'; /* "gen3rate": not a level kind */
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_expect(&c, PROTO_HELLO, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int sent = zmq_send(c.router, c.worker.id, c.worker.len, ZMQ_SNDMORE) >= 0 &&
               zmq_send(c.router, buf, len, 0) == (int)len;
    free(buf);
    CHECK(sent);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 2, "exit %d: %s", code, c.err);
    CHECKF(strstr(c.err, "WELCOME: field 'config.mode'"), "stderr: %s", c.err);
    coord_close(&c);
}

TEST(worker_loop_usage_errors_exit_2)
{
    char err[1024], out[4096];
    const char *bogus[] = {"worker", "--bogus", NULL};
    CHECK(test_run_strata(bogus, err, sizeof err, NULL, 0) == 2 && strstr(err, "--bogus"));
    const char *nolevel[] = {"worker", "--connect", "tcp://127.0.0.1:1", NULL};
    CHECK(test_run_strata(nolevel, err, sizeof err, NULL, 0) == 2 && strstr(err, "--level"));
    const char *threads[] = {"worker",    "--level", "l", "--connect", "tcp://127.0.0.1:1",
                             "--threads", "0",       NULL};
    CHECK(test_run_strata(threads, err, sizeof err, NULL, 0) == 2 && strstr(err, "--threads"));
    const char *stub[] = {"worker",    "--level", "l", "--connect", "tcp://127.0.0.1:1",
                          "--stub-ms", "x",       NULL};
    CHECK(test_run_strata(stub, err, sizeof err, NULL, 0) == 2 && strstr(err, "--stub-ms"));
    const char *endpoint[] = {"worker",  "--level",   "l", "--connect",
                              "nowhere", "--stub-ms", "0", NULL};
    CHECK(test_run_strata(endpoint, err, sizeof err, NULL, 0) == 2 && strstr(err, "--connect"));
    /* WELCOME names no model path: the worker must be told where its model is */
    const char *nomodel[] = {"worker", "--level", "l", "--connect", "tcp://127.0.0.1:1", NULL};
    CHECK(test_run_strata(nomodel, err, sizeof err, NULL, 0) == 2 && strstr(err, "--model") &&
          strstr(err, "--pipeline"));
    const char *missing[] = {"worker",
                             "--level",
                             "l",
                             "--connect",
                             "tcp://127.0.0.1:1",
                             "--model",
                             "/nonexistent/strata-model",
                             NULL};
    CHECKF(test_run_strata(missing, err, sizeof err, NULL, 0) == 2 &&
               strstr(err, "/nonexistent/strata-model"),
           "%s", err);
    const char *help[] = {"worker", "--help", NULL};
    CHECK(test_run_strata(help, err, sizeof err, out, sizeof out) == 0);
    CHECK(strstr(out, "farm benchmarks") && strstr(out, "--stub-ms"));
}

TEST(worker_loop_config_from_welcome)
{
    level_setup s = {GEN_MODEL, "refine", 2, 64, 10, 100, 500, 4, 3.0};
    proto_level_config p, q;
    worker_config c;
    strata_err e = {0};
    level_config(&s, &p);
    CHECKF(worker_config_from_welcome(&p, &c, &e) == 0, "%s", e.msg);
    CHECK(!c.model[0] && c.level.kind == LEVEL_KIND_REFINE); /* the worker's own, not WELCOME's */
    CHECK(c.level.index == 2 && c.level.side == 64 && c.level.steps == 10);
    CHECK(c.level.noise_level == 100 && c.level.guidance == 3.0f && c.heartbeat_ms == 500);
    CHECK(c.liveness == 4 && c.sampler[0] == 0 && c.level.tile_blend == TILE_BLEND_STEP);
    q = p, q.tile_blend = "finished";
    CHECKF(worker_config_from_welcome(&q, &c, &e) == 0, "%s", e.msg);
    CHECK(c.level.tile_blend == TILE_BLEND_FINISHED);

    /* each setting this worker cannot run is refused by name */
    q = p, q.kind = (level_kind)7;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'mode'"));
    q = p, q.side = 0;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'side'"));
    q = p, q.side = WORKER_MAX_SIDE + 1;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'side'"));
    q = p, q.steps = 0;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'steps'"));
    q = p, q.index = 65536;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'index'"));
    q = p, q.tile = 16, q.overlap = 16;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'overlap'"));
    q = p, q.eta = 1.5f;
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'eta'"));
    q = p, q.sampler = "a-sampler-name-too-long";
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'sampler'"));
    q = p, q.tile_blend = "final";
    CHECK(worker_config_from_welcome(&q, &c, &e) == ERR_INPUT && strstr(e.msg, "'tile_blend'"));
}

TEST(worker_loop_resize_area_and_bilinear)
{
    /* 4x4 -> 2x2 averages each 2x2 block exactly */
    uint8_t src[4 * 4 * 3], dst[2 * 2 * 3], big[8 * 8 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int ch = 0; ch < 3; ch++)
                src[(y * 4 + x) * 3 + ch] = (uint8_t)((y / 2) * 100 + (x / 2) * 50 + (x % 2) * 2);
    strata_err e = {0};
    CHECK(worker_image_resize(src, 4, dst, 2, &e) == 0);
    CHECKF(dst[0] == 1 && dst[3] == 51 && dst[6] == 101 && dst[9] == 151, "%d %d %d %d", dst[0],
           dst[3], dst[6], dst[9]);
    /* growing keeps the corners (align_corners) */
    CHECK(worker_image_resize(src, 4, big, 8, &e) == 0);
    CHECK(big[0] == src[0] && big[(8 * 8 - 1) * 3] == src[(4 * 4 - 1) * 3]);
    CHECK(worker_image_resize(src, 4, big, 4, &e) == 0 && !memcmp(big, src, sizeof src));
}

TEST(worker_loop_stub_refine_scales_the_cond)
{
    level_setup s = {"no-model-in-stub-mode", "refine", 1, 8, 2, 0, 200, 50, 1.0};
    const char *extra[] = {"--stub-ms", "0", NULL};
    uint8_t cond[4 * 4 * 3], want[8 * 8 * 3];
    for (int i = 0; i < 4 * 4 * 3; i++)
        cond[i] = (uint8_t)(i * 5);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            memcpy(want + (y * 8 + x) * 3, cond + (y / 2 * 4 + x / 2) * 3, 3);
    coord_fake c;
    proto_level_config config;
    proto_msg r;
    level_config(&s, &config);
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l8", NULL, extra) == 0);
    CHECK(coord_welcome(&c, "l8", &config) == 0);
    proto_msg task = task_msg(61, 1, "l8", 4, 0, -1);
    task.task.cond = rgb_tensor(cond, 4);
    CHECK(coord_run_task(&c, &task, &r) == 0);
    int same = result_is(&r, 61, 1, want, 8);
    proto_msg_free(&r);
    CHECKF(same, "the stub's image is not the cond scaled by nearest neighbour");
    int code = coord_shutdown(&c);
    CHECKF(code == 0, "exit %d: %s", code, c.err);
    coord_close(&c);
}

/* WELCOME's model_hash is the coordinator's copy of the level's model: a worker whose --model
 * files differ stops with exit 2 naming both hashes; the right hash serves. */
TEST(worker_loop_model_hash_differs_exits_2)
{
    level_setup s = {GEN_MODEL, "generate", 0, 16, 2, 0, 200, 50, 1.0};
    char good[MODEL_HASH_HEX + 1];
    const char *bad = "00000000000000000000000000000000000000000000000000000000000000ff";
    strata_err e = {0};
    CHECK(model_hash_dir(GEN_MODEL, good, &e) == 0);
    coord_fake c;
    proto_level_config config;
    proto_msg m;
    level_config(&s, &config);
    config.model_hash = good;
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_welcome(&c, "l16", &config) == 0);
    CHECK(coord_shutdown(&c) == 0);
    coord_close(&c);
    config.model_hash = bad;
    CHECK(coord_open(&c) == 0 && coord_spawn(&c, "l16", s.model, NULL) == 0);
    CHECK(coord_expect(&c, PROTO_HELLO, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    proto_msg w = {.type = PROTO_WELCOME, .welcome = {.config = config}};
    CHECK(coord_send(&c, &w) == 0);
    CHECK(coord_expect(&c, PROTO_BYE, WAIT_MS, &m) == 0);
    proto_msg_free(&m);
    int code = coord_wait_exit(&c, WAIT_MS);
    CHECKF(code == 2 && strstr(c.err, "refused") && strstr(c.err, good) && strstr(c.err, bad),
           "exit %d: %s", code, c.err);
    coord_close(&c);
}
