/* The pipeline file's schema (docs/config.md): a name and 1..PIPELINE_MAX_LEVELS levels, read
 * strictly into proto's pipeline_spec. */
#include "cluster/yaml.h"
#include "kernels/kernels.h" /* sched_kind_parse: the sampler names the engine knows */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const pipeline_keys[] = {"name", "levels"};
enum { PIPELINE_KEY_NAME, PIPELINE_KEY_LEVELS, PIPELINE_KEY_COUNT };

static const char *const level_keys[] = {"name",    "kind",    "model",     "side", "steps",
                                         "sampler", "eta",     "guidance",  "pool", "noise_level",
                                         "tile",    "overlap", "tile_blend"};
enum {
    LEVEL_KEY_NAME,
    LEVEL_KEY_KIND,
    LEVEL_KEY_MODEL,
    LEVEL_KEY_SIDE,
    LEVEL_KEY_STEPS,
    LEVEL_KEY_SAMPLER,
    LEVEL_KEY_ETA,
    LEVEL_KEY_GUIDANCE,
    LEVEL_KEY_POOL,
    LEVEL_KEY_NOISE_LEVEL,
    LEVEL_KEY_TILE,
    LEVEL_KEY_OVERLAP,
    LEVEL_KEY_TILE_BLEND,
    LEVEL_KEY_COUNT
};
_Static_assert(sizeof level_keys / sizeof level_keys[0] == LEVEL_KEY_COUNT, "level_keys");

/* The name of level i: well formed and not used by an earlier level. */
static int level_parse_name(const cfg *c, const yaml_node_t *n, const char *prefix,
                            pipeline_spec *p, int i)
{
    char *name = p->levels[i].name;
    int r = cfg_get_level_name(c, n, prefix, "name", 0, name);
    for (int k = 0; !r && k < i; k++)
        if (!strcmp(p->levels[k].name, name))
            r = cfg_fail(c, n, prefix, "name", "duplicate level name \"%s\" (also levels[%d])",
                         name, k);
    return r;
}

/* The kind of level i: generate first, then refine or direct. */
static int level_parse_kind(const cfg *c, const yaml_node_t *n, const char *prefix, int i,
                            level_kind *kind)
{
    char shown[64];
    level_kind k;
    if (!cfg_is_text(n) || level_kind_parse(cfg_text(n), &k) < 0) {
        if (n->type != YAML_SCALAR_NODE)
            return cfg_fail(c, n, prefix, "kind", "expected generate, refine or direct");
        cfg_show(n->data.scalar.value, n->data.scalar.length, shown, sizeof shown);
        return cfg_fail(c, n, prefix, "kind", "expected generate, refine or direct, got \"%s\"",
                        shown);
    }
    if (i == 0 && k != LEVEL_KIND_GENERATE)
        return cfg_fail(c, n, prefix, "kind", "the first level must be generate");
    if (i > 0 && k == LEVEL_KIND_GENERATE)
        return cfg_fail(c, n, prefix, "kind", "only the first level may be generate");
    *kind = k;
    return 0;
}

/* The model directory, resolved against the directory of the pipeline file (c->origin). */
static int level_parse_model(const cfg *c, const yaml_node_t *n, const char *prefix, level_spec *l)
{
    return cfg_get_relative_path(c, n, prefix, "model", l->model, sizeof l->model);
}

/* Sides grow by whole factors: each one an integer multiple (> 1) of the one before. */
static int level_check_side(const cfg *c, const yaml_node_t *n, const char *prefix,
                            const pipeline_spec *p, int i)
{
    int side = p->levels[i].side, prev = i ? p->levels[i - 1].side : 0;
    if (i && side <= prev)
        return cfg_fail(c, n, prefix, "side", "must be larger than levels[%d].side (%d)", i - 1,
                        prev);
    if (i && side % prev)
        return cfg_fail(c, n, prefix, "side", "must be an integer multiple of levels[%d].side (%d)",
                        i - 1, prev);
    return 0;
}

/* "", ddim, ddpm or dpm++2m (the names sched_kind_parse knows). */
static int level_parse_sampler(const cfg *c, const yaml_node_t *n, const char *prefix,
                               level_spec *l)
{
    char shown[64];
    sched_kind kind;
    if (!n || cfg_is_null(n)) return 0;
    if (cfg_is_text(n) && n->data.scalar.length < sizeof l->sampler &&
        sched_kind_parse(cfg_text(n), &kind) == 0) {
        memcpy(l->sampler, cfg_text(n), n->data.scalar.length + 1);
        return 0;
    }
    if (n->type != YAML_SCALAR_NODE)
        return cfg_fail(c, n, prefix, "sampler", "expected ddim, ddpm or dpm++2m");
    cfg_show(n->data.scalar.value, n->data.scalar.length, shown, sizeof shown);
    return cfg_fail(c, n, prefix, "sampler", "expected ddim, ddpm or dpm++2m, got \"%s\"", shown);
}

/* name, kind, model and side (required), and steps' presence where the kind needs it. */
static int level_parse_core(cfg *c, const yaml_node_t *n, yaml_node_t **v, const char *prefix,
                            pipeline_spec *p, int i)
{
    level_spec *l = &p->levels[i];
    int r = 0;
    for (int k = LEVEL_KEY_NAME; !r && k <= LEVEL_KEY_SIDE; k++)
        r = cfg_require(c, n, prefix, level_keys, v, k);
    if (!r) r = level_parse_name(c, v[LEVEL_KEY_NAME], prefix, p, i);
    if (!r) r = level_parse_kind(c, v[LEVEL_KEY_KIND], prefix, i, &l->kind);
    if (!r && l->kind != LEVEL_KIND_DIRECT)
        r = cfg_require(c, n, prefix, level_keys, v, LEVEL_KEY_STEPS);
    if (!r) r = level_parse_model(c, v[LEVEL_KEY_MODEL], prefix, l);
    if (!r) r = cfg_get_int(c, v[LEVEL_KEY_SIDE], prefix, "side", 1, CONFIG_MAX_SIDE, &l->side);
    if (!r) r = level_check_side(c, v[LEVEL_KEY_SIDE], prefix, p, i);
    return r;
}

/* steps, sampler, eta, guidance, pool and noise_level. */
static int level_parse_sampling(const cfg *c, yaml_node_t **v, const char *prefix, level_spec *l)
{
    const yaml_node_t *noise = v[LEVEL_KEY_NOISE_LEVEL];
    int r = cfg_get_int(c, v[LEVEL_KEY_STEPS], prefix, "steps", 1, 10000, &l->steps);
    if (!r) r = level_parse_sampler(c, v[LEVEL_KEY_SAMPLER], prefix, l);
    if (!r) r = cfg_get_float(c, v[LEVEL_KEY_ETA], prefix, "eta", 0, 1, &l->eta);
    if (!r) r = cfg_get_float(c, v[LEVEL_KEY_GUIDANCE], prefix, "guidance", 1, 1000, &l->guidance);
    if (!r) r = cfg_get_int(c, v[LEVEL_KEY_POOL], prefix, "pool", 1, INT_MAX, &l->pool);
    if (!r) r = cfg_get_int(c, noise, prefix, "noise_level", 0, 999, &l->noise_level);
    if (!r && l->noise_level && l->kind == LEVEL_KIND_GENERATE)
        r = cfg_fail(c, noise, prefix, "noise_level", "only refine and direct levels take one");
    return r;
}

/* step (the default) or finished (tile_blend_parse's names). */
static int level_parse_tile_blend(const cfg *c, const yaml_node_t *n, const char *prefix,
                                  level_spec *l)
{
    char shown[64];
    if (!n || cfg_is_null(n)) return 0;
    if (cfg_is_text(n) && tile_blend_parse(cfg_text(n), &l->tile_blend) == 0) return 0;
    if (n->type != YAML_SCALAR_NODE)
        return cfg_fail(c, n, prefix, "tile_blend", "expected step or finished");
    cfg_show(n->data.scalar.value, n->data.scalar.length, shown, sizeof shown);
    return cfg_fail(c, n, prefix, "tile_blend", "expected step or finished, got \"%s\"", shown);
}

/* tile (0 or a multiple of 8, at most side), overlap (smaller than tile) and tile_blend. */
static int level_parse_tiles(const cfg *c, yaml_node_t **v, const char *prefix, level_spec *l)
{
    const yaml_node_t *tile = v[LEVEL_KEY_TILE], *overlap = v[LEVEL_KEY_OVERLAP];
    int r = cfg_get_int(c, tile, prefix, "tile", 0, CONFIG_MAX_SIDE, &l->tile);
    if (!r && l->tile % 8)
        r = cfg_fail(c, tile, prefix, "tile", "must be a multiple of 8 (0: no tiling)");
    if (!r && l->tile > l->side)
        r = cfg_fail(c, tile, prefix, "tile", "must not exceed side (%d)", l->side);
    if (!r) r = cfg_get_int(c, overlap, prefix, "overlap", 0, CONFIG_MAX_SIDE, &l->overlap);
    if (!r && l->overlap && !l->tile)
        r = cfg_fail(c, overlap, prefix, "overlap", "needs a tile (tile is 0)");
    if (!r && l->tile && l->overlap >= l->tile)
        r = cfg_fail(c, overlap, prefix, "overlap", "must be smaller than tile (%d)", l->tile);
    if (!r) r = level_parse_tile_blend(c, v[LEVEL_KEY_TILE_BLEND], prefix, l);
    return r;
}

/* Level i from map n; levels 0..i-1 are already in p. */
static int pipeline_parse_level(cfg *c, const yaml_node_t *n, pipeline_spec *p, int i)
{
    char prefix[32];
    yaml_node_t *v[LEVEL_KEY_COUNT];
    level_spec *l = &p->levels[i];
    snprintf(prefix, sizeof prefix, "levels[%d]", i);
    l->guidance = 1;
    l->pool = 1;
    int r = cfg_map(c, n, prefix, level_keys, LEVEL_KEY_COUNT, v);
    if (!r) r = level_parse_core(c, n, v, prefix, p, i);
    if (!r) r = level_parse_sampling(c, v, prefix, l);
    if (!r) r = level_parse_tiles(c, v, prefix, l);
    return r;
}

/* The levels list: 1..PIPELINE_MAX_LEVELS maps. */
static int pipeline_parse_levels(cfg *c, const yaml_node_t *n, pipeline_spec *p)
{
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.top == n->data.sequence.items.start)
        return cfg_fail(c, n, "", "levels", "expected a non-empty list of levels");
    long count = n->data.sequence.items.top - n->data.sequence.items.start;
    if (count > PIPELINE_MAX_LEVELS)
        return cfg_fail(c, n, "", "levels", "at most %d levels, got %ld", PIPELINE_MAX_LEVELS,
                        count);
    for (int i = 0; i < (int)count; i++) {
        int r = pipeline_parse_level(c, cfg_node(c, n->data.sequence.items.start[i]), p, i);
        if (r) return r;
        p->nlevels = i + 1;
    }
    return 0;
}

/* The whole pipeline document. */
static int pipeline_parse(cfg *c, pipeline_spec *p)
{
    yaml_node_t *root = yaml_document_get_root_node(&c->doc), *v[PIPELINE_KEY_COUNT];
    int r = cfg_map(c, root, "", pipeline_keys, PIPELINE_KEY_COUNT, v);
    for (int k = 0; !r && k < PIPELINE_KEY_COUNT; k++)
        r = cfg_require(c, root, "", pipeline_keys, v, k);
    if (!r) r = cfg_get_id(c, v[PIPELINE_KEY_NAME], "", "name", p->name);
    if (!r && !*p->name) r = cfg_fail(c, v[PIPELINE_KEY_NAME], "", "name", "expected a name");
    if (!r) r = pipeline_parse_levels(c, v[PIPELINE_KEY_LEVELS], p);
    return r;
}

int pipeline_from_yaml_text(const char *text, size_t len, const char *origin, pipeline_spec *p,
                            strata_err *e)
{
    cfg c = {.origin = origin, .e = e};
    memset(p, 0, sizeof *p);
    if (strlen(origin) >= sizeof p->path)
        return cfg_fail_line(&c, 0, "path", "longer than %d characters", SPEC_PATH_MAX - 1);
    int r = cfg_load(&c, text, len);
    if (r) return r;
    snprintf(p->path, sizeof p->path, "%s", origin);
    r = pipeline_parse(&c, p);
    yaml_document_delete(&c.doc);
    if (r) memset(p, 0, sizeof *p);
    return r;
}

int pipeline_load(const char *path, pipeline_spec *p, strata_err *e)
{
    cfg c = {.origin = path, .e = e};
    char *text = NULL;
    size_t len = 0;
    memset(p, 0, sizeof *p);
    int r = cfg_read_file(&c, &text, &len);
    if (!r) r = pipeline_from_yaml_text(text, len, path, p, e);
    free(text);
    return r;
}
