/* No one let in (docs/design.md sections 5 and 6), over real libzmq: with CURVE keys a stranger
 * cannot register, submit, read status or cancel; a client cannot cancel another key's job (an
 * admin key can); a connection reusing a worker's routing id gets no task while the worker goes
 * on; a frame before HELLO gets ERROR; without keys, a non-loopback bind needs insecure; a job's
 * paths stay inside the output root; results are checked (a foreign lease or a wrong shape never
 * reaches a PNG); a worker whose model hash differs is refused. */
#include "kernels/kernels.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

typedef struct keypair {
    char pub[41], sec[41];
} keypair;

/* A DEALER to the coordinator's worker (workers = 1) or client socket with CURVE key k. */
static void *curve_dealer(harness *h, int workers, const char *rid, const keypair *k,
                          const keypair *server)
{
    proto_sock_opts o = {.linger_ms = -1,
                         .send_timeout_ms = 200,
                         .routing_id = rid,
                         .curve = {.secret_key = k->sec, .server_key = server->pub}};
    strata_err e = {0};
    void *s = NULL;
    const char *ep = workers ? coord_worker_endpoint(h->c) : coord_client_endpoint(h->c);
    if (h->nsocks == (int)(sizeof h->socks / sizeof h->socks[0])) return NULL;
    if (proto_dealer_connect(h->ctx, ep, &o, &s, &e) < 0) fprintf(stderr, "    %s\n", e.msg);
    if (s) h->socks[h->nsocks++] = s;
    return s;
}

static int hello(void *sock, const char *name, const char *level, const char *hash)
{
    proto_msg m = {.type = PROTO_HELLO,
                   .hello = {.worker = name,
                             .level = level,
                             .host = "test",
                             .slots = 1,
                             .ranks = 1,
                             .pid = 1,
                             .model_hash = hash}};
    return harness_send(sock, &m);
}

/* The type of the next message on sock within ms (HEARTBEATs skipped), PROTO_NONE if none;
 * an ERROR's text goes to text. */
static enum proto_type next_type(void *sock, int ms, char *text, size_t len)
{
    proto_msg m;
    if (harness_recv(sock, &m, ms) < 0) return PROTO_NONE;
    enum proto_type t = m.type;
    if (text && t == PROTO_ERROR) snprintf(text, len, "%s", m.error.message);
    proto_msg_free(&m);
    return t;
}

/* A stranger's message: once libzmq has refused its handshake there is no pipe to queue it
 * on, so the send may time out; either way nothing may arrive. */
static void stranger_send(void *sock, enum proto_type type, const char *arg)
{
    proto_msg m = {.type = type};
    if (type == PROTO_HELLO)
        m.hello = (struct proto_hello){
            .worker = "eve", .level = "l16", .host = "x", .slots = 1, .ranks = 1, .pid = 1};
    if (type == PROTO_SUBMIT) m.submit.spec = arg;
    if (type == PROTO_STATUS || type == PROTO_CANCEL) m.status.job = arg;
    strata_err e = {0};
    proto_send(sock, NULL, &m, &e);
}

static void body_strangers(harness *h, keypair *srv, keypair *alice, keypair *bob, keypair *ops,
                           keypair *eve, int *test_failed_)
{
    char spec[1024], id[64], err[512];
    void *wa = curve_dealer(h, 1, "wa", alice, srv), *we = curve_dealer(h, 1, "we", eve, srv);
    void *ca = curve_dealer(h, 0, NULL, alice, srv), *cb = curve_dealer(h, 0, NULL, bob, srv);
    void *co = curve_dealer(h, 0, NULL, ops, srv), *ce = curve_dealer(h, 0, NULL, eve, srv);
    CHECK(wa && we && ca && cb && co && ce);
    /* the stranger's HELLO, SUBMIT, STATUS and CANCEL never reach the coordinator */
    snprintf(spec, sizeof spec, "name: sj\ncount: 2\nresolution: 16\nout: %s\n", h->dir);
    stranger_send(we, PROTO_HELLO, NULL);
    stranger_send(ce, PROTO_SUBMIT, spec);
    stranger_send(ce, PROTO_STATUS, NULL);
    /* the allowed ones get in: alice's worker and job */
    CHECK(hello(wa, "alice-w", "l16", NULL) == 0);
    CHECK(next_type(wa, 5000, NULL, 0) == PROTO_WELCOME);
    CHECKF(harness_submit(ca, spec, id, sizeof id) == 0, "%s", id);
    stranger_send(ce, PROTO_CANCEL, "sj");
    /* bob may read alice's job but not cancel it; ops (admin) may */
    proto_msg m;
    CHECK(harness_status(cb, "sj", &m) == 0 && m.type == PROTO_STATUS_REPLY);
    CHECK(m.status_reply.njobs == 1 && !strcmp(m.status_reply.jobs[0].state, "running"));
    proto_msg_free(&m);
    CHECK(harness_job_ref(cb, PROTO_CANCEL, "sj") == 0);
    CHECK(next_type(cb, 5000, err, sizeof err) == PROTO_ERROR);
    CHECKF(strstr(err, "belongs to another key"), "%s", err);
    CHECK(harness_job_ref(co, PROTO_CANCEL, "sj") == 0);
    CHECK(next_type(co, 5000, NULL, 0) == PROTO_CANCELLED);
    /* by now every frame eve sent would have been handled: none was answered */
    CHECK(next_type(ce, 0, NULL, 0) == PROTO_NONE && next_type(we, 0, NULL, 0) == PROTO_NONE);
}

/* CURVE on: strangers get nothing, owners and admins cancel. */
TEST(coord_curve_strangers_cannot_register_submit_read_or_cancel)
{
    keypair srv, alice, bob, ops, eve;
    keypair *all[] = {&srv, &alice, &bob, &ops, &eve};
    for (int i = 0; i < 5; i++)
        CHECK(zmq_curve_keypair(all[i]->pub, all[i]->sec) == 0);
    coord_key allow[3] = {{.admin = 0}, {.admin = 0}, {.admin = 1}};
    memcpy(allow[0].key, alice.pub, 41);
    memcpy(allow[1].key, bob.pub, 41);
    memcpy(allow[2].key, ops.pub, 41);
    coord_options o = {.curve_secret = srv.sec, .allow = allow, .nallow = 3};
    harness h;
    CHECK(harness_start(&h, &o) == 0);
    int failed = 0;
    body_strangers(&h, &srv, &alice, &bob, &ops, &eve, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* A connection reusing a registered worker's routing id: libzmq refuses it (no handover), so it
 * gets no task; a routing id that has not said HELLO gets ERROR; the real worker finishes the
 * job. */
static void body_identity(harness *h, int *test_failed_)
{
    fake_worker w;
    char spec[512], id[64], err[256], path[1200];
    CHECK(harness_worker(h, &w, "w1", 0, 0) == 0);
    void *dup = harness_dealer(h, 1, "w1"), *fresh = harness_dealer(h, 1, "x9");
    CHECK(dup && fresh);
    CHECK(harness_ready(dup, 8, 0) == 0 && harness_ready(fresh, 8, 0) == 0);
    CHECK(next_type(fresh, 5000, err, sizeof err) == PROTO_ERROR);
    CHECKF(strstr(err, "say HELLO first"), "%s", err);
    snprintf(spec, sizeof spec, "name: idj\ncount: 3\nresolution: 16\nout: %s\n", h->dir);
    CHECK(harness_submit(harness_dealer(h, 0, NULL), spec, id, sizeof id) == 0);
    for (int i = 0; i < 3; i++) {
        struct proto_task t;
        CHECK(harness_ready(w.sock, 1, (uint32_t)i) == 0);
        CHECK(harness_get_task(w.sock, &t, 5000) == 0);
        CHECK(harness_result(w.sock, t.task, t.attempt, 1, t.image, 0, 16) == 0);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/idj/%06d.png", h->dir, i);
        for (int k = 0; k < 200 && !harness_file_exists(path); k++)
            next_type(fresh, 10, NULL, 0); /* a 10 ms wait for the writer thread */
        CHECKF(harness_png_is(path, (uint32_t)i, 0, 16), "%s", path);
    }
    CHECK(next_type(dup, 0, NULL, 0) == PROTO_NONE); /* never a TASK, nothing at all */
}

TEST(coord_identity_reuse_gets_no_task_and_the_worker_goes_on)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    int failed = 0;
    body_identity(&h, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* Without keys only loopback binds; insecure lets another address bind and says so. */
TEST(coord_without_keys_binds_loopback_only_unless_insecure)
{
    pipeline_spec p = harness_pipeline();
    coord_options o = {.pipeline = &p,
                       .worker_endpoint = "tcp://0.0.0.0:*",
                       .client_endpoint = "tcp://127.0.0.1:*",
                       .out_root = test_tmpdir()};
    coord_t *c = NULL;
    strata_err e = {0};
    CHECK(coord_new(&o, &c, &e) == ERR_INPUT && !c);
    CHECKF(strstr(e.msg, "workers: tcp://0.0.0.0:* is not loopback") && strstr(e.msg, "insecure"),
           "%s", e.msg);
    o.insecure = 1;
    CHECKF(coord_new(&o, &c, &e) == 0, "%s", e.msg);
    coord_destroy(&c);
    char err[2048];
    const char *args[] = {"coordinator",
                          "--pipeline",
                          "configs/pipelines/emoji.yaml",
                          "--workers",
                          "tcp://0.0.0.0:0",
                          "--clients",
                          "tcp://127.0.0.1:0",
                          NULL};
    CHECK(test_run_strata(args, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "is not loopback"), "%s", err);
}

/* A job's out and init_images stay inside the output root: '..', an absolute path elsewhere and
 * a symlink pointing out are refused; a relative out lands under the root. */
static void body_out_root(harness *h, const char *outside, int *test_failed_)
{
    char spec[2048], id[512], link[1024], made[1200];
    void *cl = harness_dealer(h, 0, NULL);
    const char *bad[][2] = {{"out: ../up", "has a '..'"},
                            {"out: /tmp", "outside the output root"},
                            {"out: escape/inside", "outside the output root"},
                            {"out: sub\nstart_level: l32\ninit_images: /etc", "init_images"}};
    snprintf(link, sizeof link, "%s/escape", h->dir);
    CHECK(symlink(outside, link) == 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(spec, sizeof spec, "count: 1\nresolution: 32\n%s\n", bad[i][0]);
        CHECK(harness_submit(cl, spec, id, sizeof id) == -1);
        CHECKF(strstr(id, bad[i][1]), "%s: %s", bad[i][0], id);
    }
    snprintf(made, sizeof made, "%s/inside", outside);
    struct stat st;
    CHECK(stat(made, &st) != 0); /* nothing was made through the symlink */
    snprintf(spec, sizeof spec, "name: rel\ncount: 0\nresolution: 16\nout: sub/dir\n");
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    snprintf(made, sizeof made, "%s/sub/dir/rel", h->dir);
    CHECK(stat(made, &st) == 0 && S_ISDIR(st.st_mode));
}

TEST(coord_job_paths_stay_inside_the_output_root)
{
    char outside[600];
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    snprintf(outside, sizeof outside, "%s-outside", h.dir); /* beside the root */
    CHECK(mkdir(outside, 0755) == 0);
    int failed = 0;
    body_out_root(&h, outside, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(rmdir(outside) == 0); /* still empty */
    CHECK(!failed);
}

/* A RESULT for a lease the sender does not hold is dropped; a wrong shape fails the attempt; the
 * PNG holds the pixels of the one good RESULT. */
static void body_checked(harness *h, int *test_failed_)
{
    fake_worker a, b;
    struct proto_task t, t2;
    char spec[512], id[64], path[1200];
    CHECK(harness_worker(h, &a, "a", 0, 1) == 0 && harness_worker(h, &b, "b", 0, 0) == 0);
    snprintf(spec, sizeof spec, "name: chk\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECK(harness_submit(harness_dealer(h, 0, NULL), spec, id, sizeof id) == 0);
    CHECK(harness_get_task(a.sock, &t, 5000) == 0);
    /* b forges a's lease with other pixels (level 5's) */
    CHECK(harness_result(b.sock, t.task, t.attempt, 1, t.image, 5, 16) == 0);
    CHECK(harness_result(a.sock, t.task, t.attempt, 1, t.image, 5, 8) == 0); /* wrong shape */
    CHECK(harness_ready(b.sock, 1, 0) == 0);
    CHECK(harness_get_task(b.sock, &t2, 5000) == 0);
    CHECK(t2.task == t.task && t2.attempt == t.attempt + 1);
    CHECK(harness_result(b.sock, t2.task, t2.attempt, 1, t2.image, 0, 16) == 0);
    snprintf(path, sizeof path, "%s/chk/000000.png", h->dir);
    for (int k = 0; k < 200 && !harness_file_exists(path); k++)
        next_type(a.sock, 10, NULL, 0); /* a 10 ms wait for the writer thread */
    CHECKF(harness_png_is(path, 0, 0, 16), "%s holds other pixels than the good RESULT's", path);
}

TEST(coord_results_checked_foreign_lease_and_wrong_shape_never_reach_a_png)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    int failed = 0;
    body_checked(&h, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* Copy models/l32's files into dir, config.json with one more byte when touch. */
static int copy_model(const char *dir, int touch)
{
    const char *files[] = {"config.json", "diffusion_pytorch_model.safetensors",
                           "scheduler_config.json"};
    for (int i = 0; i < 3; i++) {
        char src[256], dst[1200];
        snprintf(src, sizeof src, "models/l32/%s", files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        size_t n = 0;
        char *buf = harness_read_file(src, &n);
        FILE *f = fopen(dst, "wb");
        if (!buf || !f || fwrite(buf, 1, n, f) != n) return -1;
        if (touch && i == 0) fputc(' ', f);
        fclose(f);
        free(buf);
    }
    return 0;
}

/* The coordinator hashes level l16's model (models/l32 here); a HELLO with another hash is
 * refused naming both; a real worker started on a changed copy exits 2 saying so. */
static void body_model_hash(harness *h, int *test_failed_)
{
    char good[MODEL_HASH_HEX + 1], bad[MODEL_HASH_HEX + 1], err[4096], dir[1200];
    strata_err e = {0};
    CHECK(model_hash_dir("models/l32", good, &e) == 0);
    snprintf(dir, sizeof dir, "%s/model", h->dir);
    CHECK(mkdir(dir, 0755) == 0 && copy_model(dir, 1) == 0);
    CHECK(model_hash_dir(dir, bad, &e) == 0 && strcmp(good, bad) != 0);
    void *w = harness_dealer(h, 1, "hw");
    CHECK(hello(w, "hw", "l16", bad) == 0);
    CHECK(next_type(w, 5000, err, sizeof err) == PROTO_ERROR);
    CHECKF(!strncmp(err, "refused", 7) && strstr(err, good) && strstr(err, bad), "%s", err);
    CHECK(hello(w, "hw", "l16", good) == 0);
    CHECK(next_type(w, 5000, NULL, 0) == PROTO_WELCOME);
    const char *args[] = {
        "worker",  "--level", "l16",       "--connect", coord_worker_endpoint(h->c),
        "--model", dir,       "--stub-ms", "0",         NULL};
    CHECK(test_run_strata(args, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "refused") && strstr(err, good) && strstr(err, bad), "%s", err);
    /* --pipeline: the worker finds its level's model there (test-tiny's l16 is another one) */
    const char *pargs[] = {"worker",
                           "--level",
                           "l16",
                           "--connect",
                           coord_worker_endpoint(h->c),
                           "--pipeline",
                           "configs/pipelines/test-tiny.yaml",
                           NULL};
    CHECK(test_run_strata(pargs, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "refused") && strstr(err, good), "%s", err);
    pargs[2] = "l99";
    CHECK(test_run_strata(pargs, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "has no level 'l99'"), "%s", err);
}

TEST(coord_worker_with_another_model_is_refused_by_hash)
{
    harness h;
    pipeline_spec p = harness_pipeline();
    snprintf(p.levels[0].model, sizeof p.levels[0].model, "models/l32");
    coord_options o = {.pipeline = &p};
    CHECK(harness_start(&h, &o) == 0);
    int failed = 0;
    body_model_hash(&h, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* The client socket takes a job spec, not a tensor: a frame over COORD_CLIENT_MAX_FRAME cuts
 * that client off, and the coordinator keeps serving others. */
static void body_client_cap(harness *h, int *test_failed_)
{
    void *big = harness_dealer(h, 0, NULL), *other = harness_dealer(h, 0, NULL);
    size_t n = COORD_CLIENT_MAX_FRAME + 4096;
    char *spec = malloc(n + 1);
    CHECK(spec && big && other);
    memset(spec, '#', n);
    spec[n] = 0;
    proto_msg m = {.type = PROTO_SUBMIT, .submit = {.spec = spec}};
    strata_err e = {0};
    int sent = proto_send(big, NULL, &m, &e);
    free(spec);
    CHECK(sent == 0);
    CHECK(next_type(big, 500, NULL, 0) == PROTO_NONE);
    CHECK(harness_status(other, NULL, &m) == 0 && m.type == PROTO_STATUS_REPLY);
    CHECK(m.status_reply.njobs == 0);
    proto_msg_free(&m);
}

TEST(coord_client_frames_are_capped_small)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    int failed = 0;
    body_client_cap(&h, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* A worker that says HELLO again on a fresh connection (what `strata worker` does after a
 * silence) ends its old registration at once: the task it held is re-queued and runs on the
 * new connection. */
static void body_new_connection(harness *h, int *test_failed_)
{
    fake_worker w;
    struct proto_task t, t2;
    char spec[512], id[64], path[1200];
    CHECK(harness_worker(h, &w, "w1", 0, 1) == 0);
    snprintf(spec, sizeof spec, "name: nc\ncount: 1\nresolution: 16\nout: %s\n", h->dir);
    CHECK(harness_submit(harness_dealer(h, 0, NULL), spec, id, sizeof id) == 0);
    CHECK(harness_get_task(w.sock, &t, 5000) == 0);
    void *again = harness_dealer(h, 1, "w1.fresh");
    CHECK(again && hello(again, "w1", "l16", NULL) == 0);
    CHECK(next_type(again, 5000, NULL, 0) == PROTO_WELCOME);
    CHECK(harness_ready(again, 1, 0) == 0);
    CHECK(harness_get_task(again, &t2, 5000) == 0);
    CHECK(t2.task == t.task && t2.attempt == t.attempt + 1);
    /* the old lease's late RESULT is not taken */
    CHECK(harness_result(w.sock, t.task, t.attempt, 1, t.image, 5, 16) == 0);
    CHECK(harness_result(again, t2.task, t2.attempt, 1, t2.image, 0, 16) == 0);
    snprintf(path, sizeof path, "%s/nc/000000.png", h->dir);
    for (int k = 0; k < 200 && !harness_file_exists(path); k++)
        next_type(again, 10, NULL, 0); /* a 10 ms wait for the writer thread */
    CHECKF(harness_png_is(path, 0, 0, 16), "%s", path);
}

TEST(coord_worker_hello_on_a_new_connection_ends_the_old_one)
{
    harness h;
    CHECK(harness_start(&h, NULL) == 0);
    int failed = 0;
    body_new_connection(&h, &failed);
    CHECK(harness_stop(&h) == 0);
    CHECK(!failed);
}

/* Alice's job on a coordinator with keys and --state, which stops and starts again on the same
 * state: the job still belongs to alice (its owner is journaled with it), so bob still cannot
 * cancel it and alice can. */
static void body_owner_restart(const coord_options *o, keypair *srv, keypair *alice, keypair *bob,
                               const char *out, int *test_failed_)
{
    harness h;
    char spec[1200], id[64], err[512];
    snprintf(spec, sizeof spec, "name: oj\ncount: 2\nresolution: 16\nout: %s\n", out);
    CHECK(harness_start(&h, o) == 0);
    void *ca = curve_dealer(&h, 0, NULL, alice, srv);
    int submitted = ca && harness_submit(ca, spec, id, sizeof id) == 0;
    CHECK(harness_stop(&h) == 0);
    CHECKF(submitted, "alice's SUBMIT: %s", id);
    CHECK(harness_start(&h, o) == 0); /* no worker ever joined: the job is restored running */
    void *cb = curve_dealer(&h, 0, NULL, bob, srv);
    ca = curve_dealer(&h, 0, NULL, alice, srv);
    enum proto_type bob_got = PROTO_NONE, alice_got = PROTO_NONE;
    if (cb && harness_job_ref(cb, PROTO_CANCEL, "oj") == 0)
        bob_got = next_type(cb, 5000, err, sizeof err);
    if (ca && harness_job_ref(ca, PROTO_CANCEL, "oj") == 0)
        alice_got = next_type(ca, 5000, NULL, 0);
    CHECK(harness_stop(&h) == 0);
    CHECKF(bob_got == PROTO_ERROR && strstr(err, "belongs to another key"),
           "bob's CANCEL after the restart: %s %s", proto_type_name(bob_got), err);
    CHECKF(alice_got == PROTO_CANCELLED, "alice's CANCEL after the restart: %s",
           proto_type_name(alice_got));
}

TEST(coord_job_owner_survives_a_restart_on_the_same_state)
{
    keypair srv, alice, bob;
    keypair *all[] = {&srv, &alice, &bob};
    for (int i = 0; i < 3; i++)
        CHECK(zmq_curve_keypair(all[i]->pub, all[i]->sec) == 0);
    coord_key allow[2] = {{.admin = 0}, {.admin = 0}};
    memcpy(allow[0].key, alice.pub, 41);
    memcpy(allow[1].key, bob.pub, 41);
    /* a folder of the test's own: each harness_start takes a fresh test_tmpdir */
    char base[1024], state[1100], out[1100];
    const char *run = test_run_dir();
    snprintf(base, sizeof base, "%s/owner-XXXXXX", run && *run ? run : "/tmp");
    CHECK(mkdtemp(base) != NULL);
    snprintf(state, sizeof state, "%s/state", base);
    snprintf(out, sizeof out, "%s/out", base);
    coord_options o = {
        .curve_secret = srv.sec, .allow = allow, .nallow = 2, .state_dir = state, .out_root = base};
    int failed = 0;
    body_owner_restart(&o, &srv, &alice, &bob, out, &failed);
    test_remove_tree(base);
    CHECK(!failed);
}
