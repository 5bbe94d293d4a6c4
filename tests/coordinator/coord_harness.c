/* The coordinator test harness (see coord_harness.h). */
#include "tests/coordinator/coord_harness.h"
#include "kernels/kernels.h"
#include "tests/test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

enum { FARM_TICK_MS = 40 };

static level_spec level(const char *name, level_kind kind, int side)
{
    level_spec l = {.kind = kind, .side = side, .steps = 2, .eta = 0, .guidance = 1, .pool = 1};
    snprintf(l.name, sizeof l.name, "%s", name);
    snprintf(l.model, sizeof l.model, "models/%s", name);
    return l;
}

pipeline_spec harness_pipeline(void)
{
    pipeline_spec p = {.nlevels = 3};
    snprintf(p.name, sizeof p.name, "tiny");
    p.levels[0] = level("l16", LEVEL_KIND_GENERATE, 16);
    p.levels[1] = level("l32", LEVEL_KIND_REFINE, 32);
    p.levels[2] = level("l64", LEVEL_KIND_REFINE, 64);
    p.levels[1].noise_level = 50;
    return p;
}

/* ---------------------------------------------------------------- the job parser */

static int parse_seeds(const char *v, job_spec *j)
{
    int n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    j->seeds = calloc((size_t)n, sizeof *j->seeds);
    if (!j->seeds) return -1;
    char *end;
    for (int i = 0; i < n; i++, v = end + 1) {
        j->seeds[i] = strtoull(v, &end, 10);
        if (*end != ',' && *end) return -1;
    }
    return n == j->count ? 0 : -1;
}

static int set_field(job_spec *j, const char *k, const char *v)
{
#define INT_FIELD(name)                                                                            \
    if (!strcmp(k, #name)) {                                                                       \
        j->name = (int)strtol(v, NULL, 10);                                                        \
        return 0;                                                                                  \
    }
#define STR_FIELD(name)                                                                            \
    if (!strcmp(k, #name)) {                                                                       \
        snprintf(j->name, sizeof j->name, "%s", v);                                                \
        return 0;                                                                                  \
    }
    INT_FIELD(count)
    INT_FIELD(resolution)
    INT_FIELD(priority)
    INT_FIELD(class_label)
    INT_FIELD(keep_levels)
    STR_FIELD(name)
    STR_FIELD(out)
    STR_FIELD(pipeline)
    STR_FIELD(start_level)
    STR_FIELD(init_images)
#undef INT_FIELD
#undef STR_FIELD
    if (!strcmp(k, "seed")) {
        j->seed = strtoull(v, NULL, 10);
        return 0;
    }
    if (!strcmp(k, "seeds")) return parse_seeds(v, j);
    return -1;
}

int harness_parse_job(const char *text, size_t len, const char *origin, job_spec *j, strata_err *e)
{
    memset(j, 0, sizeof *j);
    j->count = 1;
    j->class_label = -1;
    snprintf(j->out, sizeof j->out, "out");
    char line[1200];
    int no = 0;
    for (size_t at = 0; at < len; no++) {
        size_t n = 0;
        while (at + n < len && text[at + n] != '\n')
            n++;
        snprintf(line, sizeof line, "%.*s", (int)n, text + at);
        at += n + 1;
        if (!line[0]) continue;
        char *colon = strstr(line, ": ");
        if (colon) *colon = 0;
        if (!colon || set_field(j, line, colon + 2) < 0) {
            free(j->seeds);
            j->seeds = NULL;
            return err_set(e, ERR_INPUT, "%s:%d: %s: bad line", origin, no + 1, line);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- coordinator */

static void *coord_thread(void *arg)
{
    harness *h = arg;
    h->rc = coord_run(h->c);
    return NULL;
}

int harness_start(harness *h, const coord_options *in)
{
    memset(h, 0, sizeof *h);
    h->pipe = harness_pipeline();
    snprintf(h->dir, sizeof h->dir, "%s", test_tmpdir());
    coord_options o = in ? *in : (coord_options){0};
    if (!o.pipeline) o.pipeline = &h->pipe;
    if (!o.worker_endpoint) o.worker_endpoint = "tcp://127.0.0.1:*";
    if (!o.client_endpoint) o.client_endpoint = "tcp://127.0.0.1:*";
    if (!o.heartbeat_ms) o.heartbeat_ms = 1000;
    if (!o.liveness) o.liveness = 10;
    if (!o.parse_job) o.parse_job = harness_parse_job;
    if (!o.out_root) o.out_root = h->dir;
    o.verbose = getenv("STRATA_TEST_VERBOSE") != NULL;
    o.check = 1; /* every coordinator test verifies the invariants after every message */
    strata_err e = {0};
    if (coord_new(&o, &h->c, &e) != 0) {
        fprintf(stderr, "    coord_new: %s\n", e.msg);
        return -1;
    }
    h->ctx = zmq_ctx_new();
    if (pthread_create(&h->thread, NULL, coord_thread, h) != 0) return -1;
    h->started = 1;
    return 0;
}

void harness_halt(harness *h)
{
    if (h->started) {
        coord_stop(h->c);
        pthread_join(h->thread, NULL);
        h->started = 0;
    }
}

int harness_stop(harness *h)
{
    harness_halt(h);
    /* the coordinator first, while its peers can still take its last frames */
    if (h->c) h->checks = coord_checks_run(h->c);
    coord_destroy(&h->c);
    for (int i = 0; i < h->nsocks; i++)
        proto_sock_close(&h->socks[i]);
    h->nsocks = 0;
    if (h->ctx) zmq_ctx_term(h->ctx); /* the test's sockets are closed by then */
    h->ctx = NULL;
    return h->rc;
}

void *harness_dealer(harness *h, int workers, const char *rid)
{
    proto_sock_opts o = {.linger_ms = -1, .routing_id = rid};
    strata_err e = {0};
    void *s = NULL;
    const char *ep = workers ? coord_worker_endpoint(h->c) : coord_client_endpoint(h->c);
    if (h->nsocks == (int)(sizeof h->socks / sizeof h->socks[0])) return NULL;
    if (proto_dealer_connect(h->ctx, ep, &o, &s, &e) < 0) fprintf(stderr, "    %s\n", e.msg);
    if (s) h->socks[h->nsocks++] = s;
    return s;
}

int harness_recv(void *sock, proto_msg *m, int timeout_ms)
{
    long long deadline = clock_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - clock_now_ms();
        strata_err e = {0};
        if (left < 0) left = 0;
        if (proto_recv(sock, NULL, m, (int)left, &e) < 0) return -1;
        if (m->type != PROTO_HEARTBEAT) return 0;
        proto_msg_free(m);
    }
}

int harness_send(void *sock, const proto_msg *m)
{
    strata_err e = {0};
    int rc = proto_send(sock, NULL, m, &e);
    if (rc < 0) fprintf(stderr, "    send: %s\n", e.msg);
    return rc;
}

int harness_ready(void *sock, uint32_t capacity, uint32_t received)
{
    proto_msg m = {.type = PROTO_READY, .ready = {.capacity = capacity, .received = received}};
    return harness_send(sock, &m);
}

int harness_worker(harness *h, fake_worker *w, const char *name, int lvl, uint32_t credits)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    w->level = lvl;
    w->fail_image = -1;
    w->capacity = credits;
    w->sock = harness_dealer(h, 1, name);
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = name,
                             .level = h->pipe.levels[lvl].name,
                             .host = "test",
                             .slots = credits ? credits : 1,
                             .ranks = 1,
                             .pid = 1}};
    if (!w->sock || harness_send(w->sock, &m) < 0 || harness_recv(w->sock, &m, 5000) < 0) return -1;
    int ok = m.type == PROTO_WELCOME && m.welcome.config.side == h->pipe.levels[lvl].side;
    proto_msg_free(&m);
    return ok && harness_ready(w->sock, credits, 0) == 0 ? 0 : -1;
}

uint8_t *harness_pixels(uint32_t image, int lvl, int side)
{
    size_t n = (size_t)side * side * 3;
    uint8_t *p = malloc(n);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (uint8_t)(image * 31 + (uint32_t)lvl * 7 + i);
    return p;
}

int harness_result(void *sock, uint64_t task, uint32_t attempt, int ok, uint32_t image, int lvl,
                   int side)
{
    proto_msg m = {.type = PROTO_RESULT,
                   .result = {.task = task, .attempt = attempt, .ok = ok, .elapsed_ms = 1}};
    uint8_t *px = NULL;
    if (ok) {
        px = harness_pixels(image, lvl, side);
        m.result.output = (proto_tensor){.dtype = PROTO_DTYPE_U8,
                                         .ndim = 3,
                                         .shape = {(uint64_t)side, (uint64_t)side, 3},
                                         .data = px,
                                         .nbytes = (size_t)side * side * 3};
    } else {
        m.result.error = "kaboom";
    }
    int rc = harness_send(sock, &m);
    free(px);
    return rc;
}

int harness_submit(void *client, const char *spec, char *id, size_t idlen)
{
    proto_msg m = {.type = PROTO_SUBMIT, .submit = {.spec = spec}};
    if (harness_send(client, &m) < 0 || harness_recv(client, &m, 5000) < 0) return -1;
    int rc = m.type == PROTO_SUBMITTED ? 0 : -1;
    snprintf(id, idlen, "%s",
             m.type == PROTO_SUBMITTED ? m.submitted.job
             : m.type == PROTO_ERROR   ? m.error.message
                                       : "unexpected reply");
    proto_msg_free(&m);
    return rc;
}

int harness_status(void *client, const char *job, proto_msg *m)
{
    proto_msg q = {.type = PROTO_STATUS, .status = {.job = job}};
    if (harness_send(client, &q) < 0 || harness_recv(client, m, 5000) < 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------- the fake farm */

static int cond_matches(const struct proto_task *t)
{
    int side = (int)t->cond.shape[0];
    if (t->cond.dtype != PROTO_DTYPE_U8 || t->cond.ndim != 3 ||
        t->cond.shape[1] != (uint64_t)side || t->cond.shape[2] != 3 || t->level_index == 0)
        return 0;
    uint8_t *want = harness_pixels(t->image, (int)t->level_index - 1, side);
    int ok = want && memcmp(want, t->cond.data, t->cond.nbytes) == 0;
    free(want);
    return ok;
}

static void farm_record(farm *f, int wi, const struct proto_task *t)
{
    uint32_t resize = t->params.resize;
    if (f->nseen < FAKE_MAX_TASKS)
        f->seen[f->nseen++] =
            (task_seen){.worker = wi,
                        .level = (int)t->level_index,
                        .has_cond = t->cond.dtype != PROTO_DTYPE_NONE,
                        .cond_ok = t->cond.dtype != PROTO_DTYPE_NONE && cond_matches(t),
                        .resize = (int)resize,
                        .image = t->image,
                        .attempt = t->attempt,
                        .task = t->task,
                        .seed = t->seed,
                        .class_label = t->class_label};
    if ((int)t->level_index == f->first_level && t->image < sizeof f->started_img &&
        !f->started_img[t->image]) {
        f->started_img[t->image] = 1;
        f->started++;
        if (f->started - f->finished > f->max_open) f->max_open = f->started - f->finished;
    }
}

/* Worker wi got task t: answer it (ok or kaboom) and say it holds nothing again. */
static void farm_answer(harness *h, farm *f, int wi, const struct proto_task *t)
{
    fake_worker *w = &f->w[wi];
    int64_t side = h->pipe.levels[t->level_index].side;
    if (t->params.resize) side = t->params.resize;
    int ok = w->fail_image != FAKE_FAIL_ALL && (int)t->image != w->fail_image;
    harness_result(w->sock, t->task, t->attempt, ok, t->image, (int)t->level_index, (int)side);
    if (ok && (int)t->level_index == f->last_level && t->image < sizeof f->finished_img &&
        !f->finished_img[t->image]) {
        f->finished_img[t->image] = 1;
        f->finished++;
    }
    harness_ready(w->sock, w->capacity, w->received);
}

static void farm_worker_msgs(harness *h, farm *f, int wi)
{
    fake_worker *w = &f->w[wi];
    proto_msg m;
    strata_err e = {0};
    while (proto_recv(w->sock, NULL, &m, 0, &e) == 0) {
        if (m.type == PROTO_TASK) {
            w->received++;
            farm_record(f, wi, &m.task);
            if (!w->silent && !w->hold) farm_answer(h, f, wi, &m.task);
        } else if (m.type == PROTO_SHUTDOWN) {
            w->shutdown = 1;
        }
        proto_msg_free(&m);
    }
}

static void farm_client_msgs(farm *f, void *watcher)
{
    proto_msg m;
    strata_err e = {0};
    while (proto_recv(watcher, NULL, &m, 0, &e) == 0) {
        if (m.type == PROTO_PROGRESS) f->progress++;
        if (m.type == PROTO_DONE) {
            f->done = 1;
            snprintf(f->done_state, sizeof f->done_state, "%s", m.done.state);
        }
        proto_msg_free(&m);
    }
}

int farm_step(harness *h, farm *f, void *watcher, int ms)
{
    zmq_pollitem_t items[FAKE_MAX_WORKERS + 1];
    for (int i = 0; i < f->nw; i++)
        items[i] = (zmq_pollitem_t){f->w[i].sock, 0, ZMQ_POLLIN, 0};
    items[f->nw] = (zmq_pollitem_t){watcher, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(items, f->nw + (watcher != NULL), ms) < 0 && zmq_errno() != EINTR) return -1;
    for (int i = 0; i < f->nw; i++)
        farm_worker_msgs(h, f, i);
    if (watcher) farm_client_msgs(f, watcher);
    if (clock_now_ms() >= f->next_beat) {
        proto_msg hb = {.type = PROTO_HEARTBEAT};
        for (int i = 0; i < f->nw; i++)
            if (!f->w[i].silent) harness_send(f->w[i].sock, &hb);
        f->next_beat = clock_now_ms() + FARM_TICK_MS;
    }
    return 0;
}

int farm_run(harness *h, farm *f, void *watcher, int timeout_ms)
{
    long long deadline = clock_now_ms() + timeout_ms;
    while (!f->done && clock_now_ms() < deadline)
        if (farm_step(h, f, watcher, FARM_TICK_MS) < 0) return -1;
    return f->done ? 0 : -1;
}

int harness_png_is(const char *path, uint32_t image, int lvl, int side)
{
    uint8_t *rgb = NULL, *want = harness_pixels(image, lvl, side);
    int w = 0, h = 0, ok = 0;
    strata_err e = {0};
    if (want && png_read_rgb(path, &rgb, &w, &h, &e) == 0 && w == side && h == side)
        ok = memcmp(rgb, want, (size_t)side * side * 3) == 0;
    free(rgb);
    free(want);
    return ok;
}

int harness_job_ref(void *client, enum proto_type type, const char *job)
{
    proto_msg m = {.type = type};
    m.watch.job = job; /* WATCH, CANCEL and STATUS share the job_ref layout */
    return harness_send(client, &m);
}

/* The next message of type want on sock within timeout_ms (others, PROGRESS included, skipped). */
int harness_recv_type(void *sock, enum proto_type want, proto_msg *m, int timeout_ms)
{
    for (int i = 0; i < 64; i++) {
        if (harness_recv(sock, m, timeout_ms) < 0) return -1;
        if (m->type == want) return 0;
        proto_msg_free(m);
    }
    return -1;
}

int harness_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* 1 when the file holds the tEXt chunk key=value. */
int harness_png_has_text(const char *path, const char *key, const char *value)
{
    size_t len, klen = strlen(key), vlen = strlen(value);
    char *data = harness_read_file(path, &len), pat[256];
    memcpy(pat, key, klen + 1);
    memcpy(pat + klen + 1, value, vlen);
    int ok = data && memmem(data, len, pat, klen + 1 + vlen) != NULL;
    free(data);
    return ok;
}

int harness_get_task(void *sock, struct proto_task *out, int timeout_ms)
{
    proto_msg m;
    if (harness_recv_type(sock, PROTO_TASK, &m, timeout_ms) < 0) return -1;
    *out = m.task;
    out->cond = (proto_tensor){0};
    out->job = out->level = NULL;
    proto_msg_free(&m);
    return 0;
}

/* Re-HELLO on sock and wait for WELCOME: everything sock sent before has been handled. */
int harness_sync_worker(harness *h, void *sock, const char *name, int level)
{
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = name, .level = h->pipe.levels[level].name, .host = "t"}};
    if (harness_send(sock, &m) < 0 || harness_recv_type(sock, PROTO_WELCOME, &m, 5000) < 0)
        return -1;
    proto_msg_free(&m);
    return 0;
}

char *harness_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}
