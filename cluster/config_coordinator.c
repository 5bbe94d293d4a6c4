/* The schema of `strata coordinator --config FILE` (docs/config.md): the pipeline, endpoints
 * and timing, over the defaults the caller preset. */
#include "cluster/yaml.h"

#include <stdlib.h>

static const char *const coordinator_keys[] = {
    "pipeline", "workers",  "clients",  "heartbeat_ms", "liveness", "max_in_flight", "verbose",
    "curve",    "insecure", "out_root", "state",        "http",     "max_losses"};
enum { COORDINATOR_KEY_COUNT = sizeof coordinator_keys / sizeof coordinator_keys[0] };

/* One allow entry: FILE.pub (or a directory), or {key: FILE.pub, admin: bool}. */
static int coordinator_allow_one(cfg *c, const yaml_node_t *n, coordinator_config *o)
{
    static const char *const keys[] = {"key", "admin"};
    struct coordinator_allow *a = &o->allow[o->nallow];
    yaml_node_t *v[2] = {0};
    int r = 0;
    if (n->type == YAML_MAPPING_NODE) {
        r = cfg_map(c, n, "curve.allow", keys, 2, v);
        if (!r) r = cfg_require(c, n, "curve.allow", keys, v, 0);
        if (!r) r = cfg_get_bool(c, v[1], "curve.allow", "admin", &a->admin);
    }
    if (!r)
        r = cfg_get_relative_path(c, n->type == YAML_MAPPING_NODE ? v[0] : n, "curve", "allow",
                                  a->path, sizeof a->path);
    if (!r) o->nallow++;
    return r;
}

/* curve: {key: FILE (required), allow: a list of entries or one directory or file}. */
static int coordinator_curve(cfg *c, const yaml_node_t *n, coordinator_config *o)
{
    static const char *const keys[] = {"key", "allow"};
    yaml_node_t *v[2];
    if (!n) return 0;
    int r = cfg_map(c, n, "curve", keys, 2, v);
    if (!r) r = cfg_require(c, n, "curve", keys, v, 0);
    if (!r) r = cfg_require(c, n, "curve", keys, v, 1);
    if (!r) r = cfg_get_relative_path(c, v[0], "curve", "key", o->curve_key, SPEC_PATH_MAX);
    if (r || v[1]->type != YAML_SEQUENCE_NODE) return r ? r : coordinator_allow_one(c, v[1], o);
    long count = v[1]->data.sequence.items.top - v[1]->data.sequence.items.start;
    if (count > COORDINATOR_MAX_ALLOW)
        return cfg_fail(c, v[1], "curve", "allow", "at most %d entries (or name a directory)",
                        COORDINATOR_MAX_ALLOW);
    for (long i = 0; !r && i < count; i++)
        r = coordinator_allow_one(c, cfg_node(c, v[1]->data.sequence.items.start[i]), o);
    return r;
}

static int coordinator_parse(cfg *c, coordinator_config *o)
{
    yaml_node_t *root = yaml_document_get_root_node(&c->doc), *v[COORDINATOR_KEY_COUNT];
    int r = cfg_map(c, root, "", coordinator_keys, COORDINATOR_KEY_COUNT, v);
    if (!r) r = cfg_require(c, root, "", coordinator_keys, v, 0);
    if (!r) r = cfg_get_relative_path(c, v[0], "", "pipeline", o->pipeline, sizeof o->pipeline);
    if (!r) r = cfg_get_path(c, v[1], "", "workers", o->workers, sizeof o->workers);
    if (!r) r = cfg_get_path(c, v[2], "", "clients", o->clients, sizeof o->clients);
    if (!r) r = cfg_get_int(c, v[3], "", "heartbeat_ms", 10, 3600000, &o->heartbeat_ms);
    if (!r) r = cfg_get_int(c, v[4], "", "liveness", 1, 1000, &o->liveness);
    if (!r) r = cfg_get_int(c, v[5], "", "max_in_flight", 1, 1 << 24, &o->max_in_flight);
    if (!r) r = cfg_get_bool(c, v[6], "", "verbose", &o->verbose);
    if (!r) r = coordinator_curve(c, v[7], o);
    if (!r) r = cfg_get_bool(c, v[8], "", "insecure", &o->insecure);
    if (!r) r = cfg_get_relative_path(c, v[9], "", "out_root", o->out_root, sizeof o->out_root);
    if (!r) r = cfg_get_relative_path(c, v[10], "", "state", o->state, sizeof o->state);
    if (!r) r = cfg_get_path(c, v[11], "", "http", o->http, sizeof o->http);
    if (!r) r = cfg_get_int(c, v[12], "", "max_losses", 1, 1000, &o->max_losses);
    return r;
}

int coordinator_config_load(const char *path, coordinator_config *o, strata_err *e)
{
    cfg c = {.origin = path, .e = e};
    char *text = NULL;
    size_t len = 0;
    int r = cfg_read_file(&c, &text, &len);
    if (!r) r = cfg_load(&c, text, len);
    free(text);
    if (r) return r;
    r = coordinator_parse(&c, o);
    yaml_document_delete(&c.doc);
    return r;
}
