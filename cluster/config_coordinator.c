/* The schema of `strata coordinator --config FILE` (docs/config.md): the pipeline, endpoints
 * and timing, over the defaults the caller preset. */
#include "cluster/yaml.h"

#include <stdlib.h>

static const char *const coordinator_keys[] = {"pipeline",     "workers",  "clients",
                                               "heartbeat_ms", "liveness", "max_in_flight",
                                               "verbose",      "state"};
enum { COORDINATOR_KEY_COUNT = sizeof coordinator_keys / sizeof coordinator_keys[0] };

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
    if (!r) r = cfg_get_relative_path(c, v[7], "", "state", o->state, sizeof o->state);
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
