/* Writes the generated part of the fuzz seed corpora (`make fuzz-seeds`): frames of every
 * message type encoded by proto_encode, a journal written by the journal writer, PNGs written
 * by png_write_rgb and safetensors files written by st_write_f32, into DIR/TARGET/NAME. The
 * copied part (shipped YAML and JSON files) is tests/fuzz/run.sh --seed's. */
#include "coordinator/journal.h"
#include "kernels/kernels.h"
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

static const char *root;

static int put(const char *target, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f) ok &= fclose(f) == 0;
    if (!ok) fprintf(stderr, "make_seeds: %s: cannot write\n", path);
    return ok ? 0 : -1;
}

static int put_msg(const char *name, const proto_msg *m)
{
    void *buf = NULL;
    size_t len = 0;
    strata_err e = {0};
    if (proto_encode(m, &buf, &len, &e) != 0) {
        fprintf(stderr, "make_seeds: %s: %s\n", name, e.msg);
        return -1;
    }
    int rc = put("msg", name, buf, len);
    free(buf);
    return rc;
}

static int worker_msgs(void)
{
    static uint8_t px[3 * 4 * 4];
    proto_msg m = {.type = PROTO_HELLO};
    m.hello = (struct proto_hello){.worker = "w-01",
                                   .level = "l32",
                                   .host = "node7",
                                   .model_hash = "ab12",
                                   .slots = 4,
                                   .ranks = 2,
                                   .pid = 31337};
    int rc = put_msg("hello", &m);
    rc |= put_msg("ready", &(proto_msg){.type = PROTO_READY,
                                        .ready = {.capacity = 3, .received = 5, .draining = true}});
    m = (proto_msg){.type = PROTO_RESULT};
    m.result = (struct proto_result){.task = 1ull << 40,
                                     .attempt = 2,
                                     .ok = true,
                                     .elapsed_ms = 1234,
                                     .output = {.dtype = PROTO_DTYPE_U8,
                                                .ndim = 3,
                                                .shape = {4, 4, 3},
                                                .data = px,
                                                .nbytes = sizeof px}};
    rc |= put_msg("result_ok", &m);
    m.result = (struct proto_result){.task = 9, .ok = false, .error = "out of memory"};
    rc |= put_msg("result_failed", &m);
    rc |= put_msg("heartbeat", &(proto_msg){.type = PROTO_HEARTBEAT});
    rc |= put_msg("bye", &(proto_msg){.type = PROTO_BYE});
    return rc;
}

static int coordinator_msgs(void)
{
    static uint8_t cond[3 * 8 * 8];
    proto_msg m = {.type = PROTO_WELCOME};
    m.welcome.config = (proto_level_config){.kind = LEVEL_KIND_REFINE,
                                            .index = 1,
                                            .side = 128,
                                            .steps = 20,
                                            .sampler = "ddim",
                                            .eta = 0.5f,
                                            .noise_level = 100,
                                            .guidance = 1.5f,
                                            .tile = 64,
                                            .overlap = 16,
                                            .heartbeat_ms = 1000,
                                            .liveness = 3,
                                            .tile_blend = "step",
                                            .model_hash = "cd34"};
    int rc = put_msg("welcome", &m);
    m = (proto_msg){.type = PROTO_TASK};
    m.task = (struct proto_task){.task = 7,
                                 .attempt = 1,
                                 .job = "j-1",
                                 .image = 3,
                                 .seed = 42,
                                 .level = "l128",
                                 .level_index = 1,
                                 .class_label = -1,
                                 .params.resize = 100,
                                 .cond = {.dtype = PROTO_DTYPE_U8,
                                          .ndim = 3,
                                          .shape = {8, 8, 3},
                                          .data = cond,
                                          .nbytes = sizeof cond}};
    rc |= put_msg("task", &m);
    rc |= put_msg("shutdown", &(proto_msg){.type = PROTO_SHUTDOWN});
    rc |= put_msg("error", &(proto_msg){.type = PROTO_ERROR, .error.message = "refused: no"});
    return rc;
}

static int client_msgs(void)
{
    static const struct proto_level_status lv[] = {
        {.name = "l32", .queued = 1, .running = 2, .done = 3, .compute_ms = 400, .ranks = 1},
        {.name = "l128", .queued = 4}};
    static const struct proto_job_status jobs[] = {
        {.id = "j-1", .state = "running", .count = 8, .done = 3, .nlevels = 2, .levels = lv}};
    int rc = put_msg("submit", &(proto_msg){.type = PROTO_SUBMIT,
                                            .submit.spec = "pipeline: p.yaml\ncount: 2\n"});
    rc |= put_msg("submitted", &(proto_msg){.type = PROTO_SUBMITTED, .submitted.job = "j-1"});
    rc |= put_msg("status_all", &(proto_msg){.type = PROTO_STATUS});
    rc |= put_msg("status_job", &(proto_msg){.type = PROTO_STATUS, .status.job = "j-1"});
    proto_msg m = {.type = PROTO_STATUS_REPLY, .status_reply = {.njobs = 1, .jobs = jobs}};
    rc |= put_msg("status_reply", &m);
    rc |= put_msg("watch", &(proto_msg){.type = PROTO_WATCH, .watch.job = "j-1"});
    rc |= put_msg("progress", &(proto_msg){.type = PROTO_PROGRESS, .progress = jobs[0]});
    rc |=
        put_msg("done", &(proto_msg){.type = PROTO_DONE, .done = {.job = "j-1", .state = "done"}});
    rc |= put_msg("cancel", &(proto_msg){.type = PROTO_CANCEL, .cancel.job = "j-1"});
    rc |= put_msg("cancelled", &(proto_msg){.type = PROTO_CANCELLED, .cancelled.job = "j-1"});
    return rc;
}

/* A journal of each record type, through the writer (into a temporary path under root). */
static int journal(void)
{
    static const char spec[] = "pipeline: configs/pipelines/test-tiny.yaml\ncount: 2\n";
    const coord_rec recs[] = {
        {.type = COORD_REC_JOB,
         .job = "j-1",
         .arrival = 1,
         .text = spec,
         .textlen = sizeof spec - 1},
        {.type = COORD_REC_LEVEL,
         .job = "j-1",
         .image = 0,
         .level = 0,
         .ref = {.seg = 1, .off = 0, .len = 48, .crc = 0x1234, .side = 4}},
        {.type = COORD_REC_IMAGE, .job = "j-1", .image = 0, .ok = 1, .text = "", .textlen = 0},
        {.type = COORD_REC_IMAGE, .job = "j-1", .image = 1, .ok = 0, .text = "oom", .textlen = 3},
        {.type = COORD_REC_END, .job = "j-1", .state = 2, .done = 1, .failed = 1},
    };
    char path[512];
    snprintf(path, sizeof path, "%s/journal", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/journal/written", root);
    remove(path);
    coord_journal_t *j = NULL;
    strata_err e = {0};
    int rc = coord_journal_open(path, 0, &j, &e);
    for (size_t i = 0; !rc && i < sizeof recs / sizeof recs[0]; i++)
        rc = coord_journal_append(j, &recs[i]);
    if (!rc) rc = coord_journal_sync(j, &e);
    coord_journal_close(&j);
    if (rc) fprintf(stderr, "make_seeds: journal: %s\n", e.msg);
    return rc;
}

static int images(void)
{
    static const int sides[][2] = {{1, 1}, {3, 2}, {16, 16}};
    int rc = 0;
    for (int s = 0; s < 3; s++) {
        int w = sides[s][0], h = sides[s][1];
        uint8_t *rgb = malloc((size_t)w * h * 3);
        for (int i = 0; i < w * h * 3; i++)
            rgb[i] = (uint8_t)(i * 37);
        char path[512], name[32];
        snprintf(name, sizeof name, "rgb_%dx%d.png", w, h);
        snprintf(path, sizeof path, "%s/png", root);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/png/%s", root, name);
        png_text_kv kv = {"seed", "42"};
        strata_err e = {0};
        if (png_write_rgb_nosync(path, rgb, w, h, &kv, s == 2, &e) != 0) {
            fprintf(stderr, "make_seeds: %s\n", e.msg);
            rc = -1;
        }
        free(rgb);
    }
    return rc;
}

static int tensors(void)
{
    static const float a[6] = {1, 2, 3, 4, 5, 6}, b[1] = {0.5f};
    st_out outs[] = {{.name = "conv.weight", .data = a, .ndim = 2, .shape = {2, 3}},
                     {.name = "conv.bias", .data = b, .ndim = 1, .shape = {1}},
                     {.name = "scalar", .data = b, .ndim = 0}};
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/safetensors/written_f32.safetensors", root);
    strata_err e = {0};
    if (st_write_f32(path, outs, 3, &e) == 0) return 0;
    fprintf(stderr, "make_seeds: %s\n", e.msg);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    int rc = worker_msgs() | coordinator_msgs() | client_msgs() | journal() | images() | tensors();
    return rc ? 1 : 0;
}
