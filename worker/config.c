/* A level's settings from the coordinator's WELCOME (worker_config_from_welcome): proto decodes
 * the fields and their types; here they are checked against what this worker can run. */
#include "worker/worker.h"

#include <stdio.h>
#include <string.h>

#define WHERE "WELCOME config"

/* An integer field in [lo, hi]. */
static int config_int(const char *key, long long v, long long lo, long long hi, strata_err *e)
{
    if (v < lo || v > hi)
        return err_set(e, ERR_INPUT, WHERE ": '%s': expected an integer in [%lld, %lld], got %lld",
                       key, lo, hi, v);
    return 0;
}

/* A number field in [lo, hi] (NaN is not). */
static int config_num(const char *key, float v, double lo, double hi, strata_err *e)
{
    if (!(v >= lo && v <= hi))
        return err_set(e, ERR_INPUT, WHERE ": '%s': expected a number in [%g, %g]", key, lo, hi);
    return 0;
}

/* A string field that fits in len bytes into out; NULL is missing when required, else "". */
static int config_str(const char *key, const char *v, int required, char *out, size_t len,
                      strata_err *e)
{
    if (!v && required) return err_set(e, ERR_INPUT, WHERE ": '%s': missing", key);
    if (!v) v = "";
    if (strlen(v) >= len)
        return err_set(e, ERR_INPUT, WHERE ": '%s': longer than %zu bytes", key, len - 1);
    snprintf(out, len, "%s", v);
    return 0;
}

/* The level's kind, geometry and sampling settings. */
static int config_level(const proto_level_config *w, level_params *l, strata_err *e)
{
    int rc = level_kind_name(w->kind)
                 ? 0
                 : err_set(e, ERR_INPUT, WHERE ": 'mode': %d is not generate, refine or direct",
                           (int)w->kind);
    /* the noise key holds the level in 16 bits (kernels/philox.c) */
    if (!rc) rc = config_int("index", w->index, 0, 65535, e);
    if (!rc) rc = config_int("side", w->side, 1, WORKER_MAX_SIDE, e);
    if (!rc) rc = config_int("steps", w->steps, 1, 10000, e);
    if (!rc) rc = config_int("noise_level", w->noise_level, 0, 100000, e);
    if (!rc) rc = config_num("guidance", w->guidance, 0.0, 1000.0, e);
    if (!rc) rc = config_int("tile", w->tile, 0, WORKER_MAX_SIDE, e);
    if (!rc) rc = config_int("overlap", w->overlap, 0, WORKER_MAX_SIDE, e);
    if (!rc && w->tile > 0 && w->overlap >= w->tile)
        rc = err_set(e, ERR_INPUT, WHERE ": 'overlap': %d is not below 'tile' (%d)", w->overlap,
                     w->tile);
    if (!rc && tile_blend_parse(w->tile_blend ? w->tile_blend : "step", &l->tile_blend))
        rc = err_set(e, ERR_INPUT, WHERE ": 'tile_blend': expected step or finished, got \"%.40s\"",
                     w->tile_blend);
    /* a rank's windows are sampled with the group's global steps (level.c) */
    if (!rc && l->tile_blend == TILE_BLEND_FINISHED && worker_group_on())
        rc = err_set(e, ERR_INPUT,
                     WHERE ": 'tile_blend': a rank group runs step only, not finished");
    if (rc) return rc;
    l->kind = w->kind;
    l->index = w->index;
    l->side = w->side;
    l->steps = w->steps;
    l->noise_level = w->noise_level;
    l->guidance = w->guidance;
    l->tile = w->tile;
    l->overlap = w->overlap;
    return 0;
}

int worker_config_from_welcome(const proto_level_config *w, worker_config *c, strata_err *e)
{
    memset(c, 0, sizeof *c);
    int rc = config_str("sampler", w->sampler, 0, c->sampler, sizeof c->sampler, e);
    if (!rc && w->model_hash)
        rc = config_str("model_hash", w->model_hash, 0, c->model_hash, sizeof c->model_hash, e);
    if (!rc) rc = config_num("eta", w->eta, 0.0, 1.0, e);
    if (!rc) rc = config_level(w, &c->level, e);
    if (!rc) rc = config_int("heartbeat_ms", w->heartbeat_ms, 10, 600000, e);
    if (!rc) rc = config_int("liveness", w->liveness, 1, 1000, e);
    c->eta = w->eta;
    c->heartbeat_ms = w->heartbeat_ms;
    c->liveness = w->liveness;
    return rc;
}
