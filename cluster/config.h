/* cluster/config: pipeline, job and coordinator YAML files (libyaml) into the specs of proto and
 * coordinator/. Internal to cluster/; docs/config.md is the user's reference for every field.
 * The files: yaml.c and yaml_values.c (the reader, yaml.h), config_pipeline.c, config_job.c and
 * config_coordinator.c (one schema each). Which levels a job runs is proto's planner's to say
 * (pipeline_plan_levels).
 *
 * Every function returns 0 or a negative strata_err code (ERR_INPUT: bad input, including a file
 * that cannot be opened; ERR_RUNTIME: a read error; ERR_NOMEM) and, on error, fills e (may be
 * NULL) with one line "ORIGIN:LINE: FIELD: what is wrong", where ORIGIN is the file path or the
 * origin given, e.g. "configs/pipelines/x.yaml:7: levels[1].steps: expected a positive
 * integer". Loading is strict: unknown keys, duplicate keys and wrong types are errors.
 * No input, however malformed, crashes them or costs more than a bounded amount of memory. */
#ifndef STRATA_CLUSTER_CONFIG_H
#define STRATA_CLUSTER_CONFIG_H

#include "coordinator/coordinator.h"

#include <stddef.h>

enum {
    CONFIG_MAX_SIDE = PROTO_MAX_SIDE, /* largest level side and job resolution: a u8 image
                                         under the frame cap */
    CONFIG_MAX_COUNT = 10000000,      /* most images in one job */
    CONFIG_MAX_BYTES = 16 << 20,      /* largest YAML text accepted */
};

/* Load a pipeline file into p. Level model paths are resolved against the file's directory
 * (absolute ones are kept). The model directories are not opened here. */
int pipeline_load(const char *path, pipeline_spec *p, strata_err *e);

/* The same from text: origin names it in errors, and relative model paths are resolved against
 * origin's directory (kept as written when origin has no '/'). */
int pipeline_from_yaml_text(const char *text, size_t len, const char *origin, pipeline_spec *p,
                            strata_err *e);

/* A job with every default: count 1, seed 0, no seeds list, out "out", class_label -1, the rest
 * zero or empty. Any previous content of j is overwritten, not freed. */
void job_defaults(job_spec *j);

/* Load a job file into j (overwritten, not freed first). On success j may own a seeds list:
 * release it with job_spec_free. On error j holds the defaults and owns nothing. The pipeline
 * path is kept as written (relative to the current directory); whether the pipeline and its
 * start_level exist is checked by pipeline_load and pipeline_plan_levels, not here. */
int job_load(const char *path, job_spec *j, strata_err *e);

/* The same from text (a job received over the wire); origin names it in errors ("SUBMIT"). */
int job_spec_from_yaml_text(const char *text, size_t len, const char *origin, job_spec *j,
                            strata_err *e);

/* `strata coordinator --config FILE`: keys pipeline (required; relative to the file), workers,
 * clients (endpoints), heartbeat_ms, liveness, max_in_flight, verbose, state (a directory,
 * relative to the file). Keys absent from the
 * file leave o's fields as they are (preset the defaults). */
enum { COORDINATOR_MAX_ALLOW = 64 };
/* curve: {key: FILE, allow: [FILE.pub | {key: FILE.pub, admin: true}, ...] or DIR}, insecure
 * out_root and http (ADDR:PORT) too; paths are resolved against the file's directory. */
typedef struct coordinator_config {
    char pipeline[SPEC_PATH_MAX];
    char workers[256], clients[256];
    int heartbeat_ms, liveness, max_in_flight, verbose, max_losses;
    char state[SPEC_PATH_MAX];     /* "" : none */
    char curve_key[SPEC_PATH_MAX]; /* "" without CURVE */
    struct coordinator_allow {
        char path[SPEC_PATH_MAX]; /* a .pub file, or a directory of them */
        int admin;
    } allow[COORDINATOR_MAX_ALLOW];
    int nallow;
    int insecure;
    char out_root[SPEC_PATH_MAX];
    char http[256]; /* "ADDR:PORT" of the metrics and status page; "": none */
} coordinator_config;

int coordinator_config_load(const char *path, coordinator_config *o, strata_err *e);
/* Read f's CURVE keys: its secret (curve.key) and the keys allowed (every .pub of a directory
 * entry), into a malloc'd *allow. ERR_INPUT naming curve.key or curve.allow and the file. */
int coordinator_keys_load(const coordinator_config *f, char secret[PROTO_KEY_LEN + 1],
                          coord_key **allow, uint32_t *nallow, strata_err *e);

#endif
