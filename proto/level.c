/* The level contract's logic: level kind and tile blend names and the one level planner, which the
 * coordinator (SUBMIT) and `strata render` both call, so a job runs the same levels however it
 * arrives. */
#include "proto/proto.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[LEVEL_KIND_COUNT] = {
    [LEVEL_KIND_GENERATE] = "generate",
    [LEVEL_KIND_REFINE] = "refine",
    [LEVEL_KIND_DIRECT] = "direct",
};

const char *level_kind_name(level_kind kind)
{
    if ((int)kind < 0 || kind >= LEVEL_KIND_COUNT) return NULL;
    return kind_names[kind];
}

int level_kind_parse(const char *name, level_kind *out)
{
    for (int k = 0; name && k < LEVEL_KIND_COUNT; k++)
        if (!strcmp(name, kind_names[k])) {
            *out = (level_kind)k;
            return 0;
        }
    return ERR_VALUE;
}

static const char *const blend_names[TILE_BLEND_COUNT] = {
    [TILE_BLEND_STEP] = "step",
    [TILE_BLEND_FINISHED] = "finished",
};

const char *tile_blend_name(tile_blend_mode mode)
{
    if ((int)mode < 0 || mode >= TILE_BLEND_COUNT) return NULL;
    return blend_names[mode];
}

int tile_blend_parse(const char *name, tile_blend_mode *out)
{
    for (int k = 0; name && k < TILE_BLEND_COUNT; k++)
        if (!strcmp(name, blend_names[k])) {
            *out = (tile_blend_mode)k;
            return 0;
        }
    return ERR_VALUE;
}

/* Up to 40 characters of s, made printable, for one-line messages. */
static const char *plan_show(const char *s, char out[48])
{
    size_t n = strlen(s), k = n > 40 ? 40 : n;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    strcpy(out + k, n > 40 ? "..." : "");
    return out;
}

/* "start_level: no level ... (levels: a, b, c)". */
static int plan_no_level(const pipeline_spec *p, int n, const char *start_level, strata_err *e)
{
    char names[PIPELINE_MAX_LEVELS * (SPEC_NAME_MAX + 2)] = "", shown[48];
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o +=
            (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "", p->levels[i].name);
    return err_set(e, ERR_INPUT, "start_level: no level \"%s\" in pipeline %s (levels: %s)",
                   plan_show(start_level, shown), p->name, names);
}

/* The index of start_level in p's first n levels, which must take init images as input. */
static int plan_start(const pipeline_spec *p, int n, const char *start_level, int *first,
                      strata_err *e)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(start_level, p->levels[i].name)) continue;
        /* level 0 is generate in every loaded pipeline; a hand-built one is held to that too:
         * only a level after the first has an input to take init images in place of */
        if (i == 0 || p->levels[i].kind == LEVEL_KIND_GENERATE)
            return err_set(e, ERR_INPUT,
                           "start_level: %s is a generate level; start at a refine or direct "
                           "level (its input is init_images)",
                           start_level);
        *first = i;
        return 0;
    }
    return plan_no_level(p, n, start_level, e);
}

int pipeline_plan_levels(const pipeline_spec *p, int resolution, const char *start_level,
                         pipeline_plan *out, strata_err *e)
{
    if (resolution < 1 || resolution > PROTO_MAX_SIDE)
        return err_set(e, ERR_INPUT, "resolution: expected an integer 1..%d, got %d",
                       PROTO_MAX_SIDE, resolution);
    if (p->nlevels < 1 || p->nlevels > PIPELINE_MAX_LEVELS)
        return err_set(e, ERR_INPUT, "%s: pipeline has %d levels", p->path, p->nlevels);
    int end = 1, first = 0;
    while (end < p->nlevels && p->levels[end - 1].side < resolution)
        end++;
    /* when even the last side is below resolution, end is nlevels: all run, then resize up */
    if (start_level && *start_level) {
        int rc = plan_start(p, p->nlevels, start_level, &first, e);
        if (rc) return rc;
        if (first >= end)
            return err_set(e, ERR_INPUT,
                           "start_level: %s is past the levels planned for resolution %d (%s to "
                           "%s)",
                           start_level, resolution, p->levels[0].name, p->levels[end - 1].name);
    }
    out->first = first;
    out->end = end;
    return 0;
}
