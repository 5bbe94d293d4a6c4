/* A level's settings from the coordinator's WELCOME config map (worker_config_parse). */
#include "worker/worker.h"

#include <stdio.h>
#include <string.h>

#define WHERE "WELCOME config"

/* An integer key in [lo, hi]; when absent, *out = def, or an error if required. */
static int config_int(const proto_params *p, const char *key, int required, long long def,
                      long long lo, long long hi, long long *out, strata_err *e)
{
    int64_t v = def;
    int rc = proto_params_get_int(p, key, &v);
    if (rc == ERR_MISSING && !required) rc = 0;
    if (rc == ERR_MISSING) return err_set(e, ERR_INPUT, WHERE ": '%s': missing", key);
    if (rc) return err_set(e, ERR_INPUT, WHERE ": '%s': expected an integer", key);
    if (v < lo || v > hi)
        return err_set(e, ERR_INPUT, WHERE ": '%s': expected an integer in [%lld, %lld], got %lld",
                       key, lo, hi, (long long)v);
    *out = v;
    return 0;
}

/* A number (int or float) key in [lo, hi]; when absent, *out = def. */
static int config_num(const proto_params *p, const char *key, double def, double lo, double hi,
                      float *out, strata_err *e)
{
    double v = def;
    int rc = proto_params_get_num(p, key, &v);
    if (rc == ERR_MISSING) rc = 0;
    if (rc || !(v >= lo && v <= hi))
        return err_set(e, ERR_INPUT, WHERE ": '%s': expected a number in [%g, %g]", key, lo, hi);
    *out = (float)v;
    return 0;
}

/* A string key that fits in len bytes; when absent, *out = def, or an error if required. */
static int config_str(const proto_params *p, const char *key, int required, const char *def,
                      char *out, size_t len, strata_err *e)
{
    const char *v = def;
    int rc = proto_params_get_str(p, key, &v);
    if (rc == ERR_MISSING && !required) rc = 0;
    if (rc == ERR_MISSING) return err_set(e, ERR_INPUT, WHERE ": '%s': missing", key);
    if (rc) return err_set(e, ERR_INPUT, WHERE ": '%s': expected a string", key);
    if (strlen(v) >= len)
        return err_set(e, ERR_INPUT, WHERE ": '%s': longer than %zu bytes", key, len - 1);
    snprintf(out, len, "%s", v);
    return 0;
}

static int config_mode(const proto_params *p, level_mode *mode, strata_err *e)
{
    static const char *const names[] = {"generate", "refine", "direct"};
    static const level_mode modes[] = {LEVEL_MODE_GENERATE, LEVEL_MODE_REFINE, LEVEL_MODE_DIRECT};
    char name[16];
    int rc = config_str(p, "mode", 1, NULL, name, sizeof name, e);
    for (int i = 0; !rc && i < 3; i++)
        if (!strcmp(name, names[i])) {
            *mode = modes[i];
            return 0;
        }
    return rc ? rc
              : err_set(e, ERR_INPUT, WHERE ": 'mode': '%s' is not generate, refine or direct",
                        name);
}

/* The level's geometry and sampling settings. */
static int config_level(const proto_params *p, level_params *l, strata_err *e)
{
    long long index = 0, side = 0, steps = 0, noise = 0, tile = 0, overlap = 0;
    int rc = config_mode(p, &l->mode, e);
    /* the noise key holds the level in 16 bits (kernels/philox.c) */
    if (!rc) rc = config_int(p, "index", 1, 0, 0, 65535, &index, e);
    if (!rc) rc = config_int(p, "side", 1, 0, 1, WORKER_MAX_SIDE, &side, e);
    if (!rc) rc = config_int(p, "steps", 1, 0, 1, 10000, &steps, e);
    if (!rc) rc = config_int(p, "noise_level", 0, 0, 0, 100000, &noise, e);
    if (!rc) rc = config_num(p, "guidance", 1.0, 0.0, 1000.0, &l->guidance, e);
    if (!rc) rc = config_int(p, "tile", 0, 0, 0, WORKER_MAX_SIDE, &tile, e);
    if (!rc) rc = config_int(p, "overlap", 0, 0, 0, WORKER_MAX_SIDE, &overlap, e);
    if (!rc && tile > 0 && overlap >= tile)
        rc = err_set(e, ERR_INPUT, WHERE ": 'overlap': %lld is not below 'tile' (%lld)", overlap,
                     tile);
    l->index = (uint32_t)index;
    l->side = (int)side;
    l->steps = (int)steps;
    l->noise_level = (int)noise;
    l->tile = (int)tile;
    l->overlap = (int)overlap;
    return rc;
}

int worker_config_parse(const proto_params *p, worker_config *c, strata_err *e)
{
    long long hb = 0, liveness = 0;
    memset(c, 0, sizeof *c);
    int rc = config_str(p, "model", 1, NULL, c->model, sizeof c->model, e);
    if (!rc) rc = config_str(p, "sampler", 0, "", c->sampler, sizeof c->sampler, e);
    if (!rc) rc = config_num(p, "eta", 0.0, 0.0, 1.0, &c->eta, e);
    if (!rc) rc = config_level(p, &c->level, e);
    if (!rc) rc = config_int(p, "heartbeat_ms", 0, 1000, 10, 600000, &hb, e);
    if (!rc) rc = config_int(p, "liveness", 0, 3, 1, 1000, &liveness, e);
    c->heartbeat_ms = (int)hb;
    c->liveness = (int)liveness;
    return rc;
}
