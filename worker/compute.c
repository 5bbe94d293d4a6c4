/* The worker loop's compute thread: loads the level's model and runs its tasks, so that the
 * main thread stays free to heartbeat. It never touches the coordinator's socket. */
#include "worker/group.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

enum { COMPUTE_SLEEP_SLICE_MS = 20 };

int compute_cmd_send(void *pair, compute_cmd *c, int flags)
{
    return zmq_send(pair, &c, sizeof c, flags) == (int)sizeof c ? 0 : -1;
}

int compute_cmd_recv(void *pair, compute_cmd **c, int flags)
{
    int n = zmq_recv(pair, c, sizeof *c, flags);
    if (n < 0) return -1;
    if (n != (int)sizeof *c) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

void compute_cmd_free(compute_cmd *c)
{
    if (!c) return;
    free(c->cond);
    free(c->out);
    free(c);
}

/* A level must suit its model: generate takes x_t alone, refine and direct x_t + an RGB cond. */
static int compute_check_model(const unet_t *m, const worker_config *cfg, strata_err *e)
{
    const unet_info *info = unet_get_info(m);
    int cond = cfg->level.kind == LEVEL_KIND_GENERATE ? 0 : 3;
    if (info->in_channels != info->out_channels + cond)
        return err_set(e, ERR_INPUT,
                       "%s: a %s level needs in_channels = out_channels%s; the model has %d "
                       "and %d",
                       cfg->model, cond ? "refine/direct" : "generate", cond ? " + 3" : "",
                       info->in_channels, info->out_channels);
    if (cfg->level.side % info->downsample_factor)
        return err_set(e, ERR_INPUT, "%s: side %d is not a multiple of %d", cfg->model,
                       cfg->level.side, info->downsample_factor);
    return 0;
}

/* The model loaded from dir must be the coordinator's (cfg->model_hash, when it knows it):
 * hashed once per load. ERR_INPUT "refused: ..." naming both hashes. */
static int compute_check_hash(compute *c, const worker_config *cfg, int loaded, strata_err *e)
{
    if (!cfg->model_hash[0]) return 0;
    if ((loaded || !c->model_hash[0]) && model_hash_dir(cfg->model, c->model_hash, e))
        return e->code;
    if (!strcmp(c->model_hash, cfg->model_hash)) return 0;
    return err_set(e, ERR_INPUT,
                   "refused: %s: the level's model differs: the coordinator's is sha256 %s, "
                   "this worker's %s",
                   cfg->model, cfg->model_hash, c->model_hash);
}

/* Take cfg: load its model unless the loaded one comes from the same directory (a coordinator
 * restart re-sends the same WELCOME), and read the sampler settings. Stub mode loads nothing. */
static int compute_load(compute *c, const worker_config *cfg, strata_err *e)
{
    worker_config next = *cfg;
    if (c->stub_ms >= 0) {
        sched_config_default(SCHED_DDIM, &next.level.sched);
    } else {
        int loaded = !c->model || strcmp(c->config.model, cfg->model) != 0;
        if (loaded) {
            unet_t *m = NULL;
            int rc = unet_load(cfg->model, &m, e);
            if (rc) return rc;
            unet_free(c->model);
            c->model = m;
        }
        int rc = compute_check_hash(c, cfg, loaded, e);
        if (!rc) rc = compute_check_model(c->model, cfg, e);
        if (!rc)
            rc = worker_model_scheduler(cfg->model, cfg->sampler, cfg->eta, &next.level.sched, e);
        if (rc) return rc;
    }
    c->config = next;
    c->configured = 1;
    return 0;
}

/* Sleep ms milliseconds of simulated compute, ending early when the task is abandoned. */
static void compute_stub_sleep(compute *c, int ms)
{
    long long end = clock_now_ms() + ms;
    for (;;) {
        long long left = end - clock_now_ms();
        if (left <= 0 || atomic_load(&c->abandon)) return;
        if (left > COMPUTE_SLEEP_SLICE_MS) left = COMPUTE_SLEEP_SLICE_MS;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The stub's image: the cond scaled by nearest neighbour, or a flat grey from the seed. */
static void compute_stub_image(const level_task *t, int side, uint8_t *out)
{
    if (!t->cond) {
        memset(out, (int)(64 + (t->seed + 7u * t->image) % 128), (size_t)side * side * 3);
        return;
    }
    int cs = t->cond_side;
    for (int y = 0; y < side; y++)
        for (int x = 0; x < side; x++) {
            const uint8_t *p =
                t->cond + ((size_t)(y * cs / side) * cs + (size_t)(x * cs / side)) * 3;
            memcpy(out + ((size_t)y * side + x) * 3, p, 3);
        }
}

/* Run one image at the configured level, then resize it if asked. */
static int compute_task(compute *c, compute_cmd *cmd, strata_err *e)
{
    if (!c->configured) return err_set(e, ERR_INPUT, "no WELCOME yet: the level is not set");
    int side = c->config.level.side, nside = cmd->resize > 0 ? cmd->resize : side;
    uint8_t *img = malloc((size_t)side * side * 3);
    if (!img) return err_set(e, ERR_NOMEM, "out of memory for a %dx%d image", side, side);
    int rc = 0;
    if (c->stub_ms >= 0) {
        compute_stub_image(&cmd->lt, side, img);
        compute_stub_sleep(c, c->stub_ms);
    } else {
        /* a job's planned sampling (budget_s, steps) overrides the level's for this task */
        level_params p = c->config.level;
        if (cmd->params.steps > 0) p.steps = (int)cmd->params.steps;
        if (cmd->params.direct && p.kind == LEVEL_KIND_REFINE) p.kind = LEVEL_KIND_DIRECT;
        rc = p.steps > 10000
                 ? err_set(e, ERR_INPUT, "TASK params 'steps': expected an integer in [1, 10000]")
                 : level_run(c->model, &p, &cmd->lt, img, e);
    }
    if (!rc && nside != side) {
        uint8_t *out = malloc((size_t)nside * nside * 3);
        rc = out ? worker_image_resize(img, side, out, nside, e)
                 : err_set(e, ERR_NOMEM, "out of memory for a %dx%d image", nside, nside);
        free(img);
        img = out;
    }
    if (rc) {
        free(img);
        return rc;
    }
    cmd->out = img;
    cmd->out_side = nside;
    return 0;
}

void compute_run(compute *c, compute_cmd *cmd)
{
    strata_err e = {0};
    long long t0 = clock_now_ms(), cpu0 = clock_cpu_us();
    int group = worker_group_size() > 1;
    if (atomic_load(&c->abandon))
        cmd->rc = err_set(&e, ERR_RUNTIME, "abandoned: the worker is stopping");
    else if (group && worker_group_rank() == 0 && (cmd->rc = group_send_cmd(cmd, &e)))
        ; /* the others never saw it: nothing to agree on */
    else {
        cmd->rc = cmd->kind == COMPUTE_LOAD ? compute_load(c, &cmd->config, &e)
                                            : compute_task(c, cmd, &e);
        if (group) cmd->rc = group_agree_err(cmd->rc, &e);
    }
    cmd->elapsed_ms = (uint64_t)(clock_now_ms() - t0);
    cmd->cpu_us = (uint64_t)(clock_cpu_us() - cpu0);
    if (cmd->rc) snprintf(cmd->error, sizeof cmd->error, "%s", e.msg);
}

void *compute_main(void *arg)
{
    compute *c = arg;
    kernels_set_threads(c->threads);
    for (;;) {
        compute_cmd *cmd = NULL;
        if (compute_cmd_recv(c->pair, &cmd, 0) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (cmd->kind == COMPUTE_STOP) {
            compute_cmd_free(cmd);
            break;
        }
        compute_run(c, cmd);
        /* the pipe holds far more than the few commands in flight: never full */
        if (compute_cmd_send(c->pair, cmd, ZMQ_DONTWAIT) < 0) {
            compute_cmd_free(cmd);
            break;
        }
    }
    /* the loop sets abandon before every stop: the thread is here, so nothing runs any more */
    if (worker_group_size() > 1) {
        compute_cmd stop = {.kind = COMPUTE_STOP};
        strata_err e = {0};
        group_send_cmd(&stop, &e); /* the other ranks leave their loop */
    }
    unet_free(c->model);
    c->model = NULL;
    zmq_close(c->pair);
    c->pair = NULL;
    return NULL;
}
