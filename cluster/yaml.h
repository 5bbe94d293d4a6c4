/* Internal to cluster/'s config files: the strict YAML reader (libyaml) the schemas are written
 * with. yaml.c reads a document within bounds; yaml_values.c reads its typed values and maps.
 *
 * A text is read in two passes: an event scan that reports syntax errors and bounds what the
 * document may cost (one document, nesting depth, node count: libyaml 0.2.5 has no limits of its
 * own, and its tree costs ~150 bytes a node), then yaml_parser_load for the tree. The tree is
 * read by a walk of the known schema only, at a fixed depth, so aliases (even cyclic ones) can
 * neither loop nor multiply the work.
 *
 * Errors: the functions return 0 or a negative strata_err code and fill c->e with
 * "ORIGIN:LINE: FIELD: what is wrong". FIELD is prefix.key ("levels[1].steps"), key alone at the
 * top level (prefix ""), prefix alone when key is NULL. Getters given n == NULL (the key is
 * absent) leave their output as it is and succeed. */
#ifndef STRATA_CLUSTER_YAML_H
#define STRATA_CLUSTER_YAML_H

#include "cluster/config.h"

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

/* A loaded document and where its errors go. */
typedef struct cfg {
    yaml_document_t doc;
    const char *origin; /* the file path, or what names the text ("SUBMIT") */
    strata_err *e;
} cfg;

/* ---------------------------------------------------------------- errors (yaml.c) */

/* An input error at 1-based line (0: no line). */
int cfg_fail_line(const cfg *c, size_t line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An input error about node n, which is the field prefix.key. */
int cfg_fail(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* s (n bytes) as a short printable excerpt into buf, so a message stays one line. */
const char *cfg_show(const unsigned char *s, size_t n, char *buf, size_t cap);

/* ---------------------------------------------------------------- documents (yaml.c) */

/* Read the file c->origin names (at most CONFIG_MAX_BYTES) into a malloc'd *text. A file that
 * cannot be opened is bad input. */
int cfg_read_file(const cfg *c, char **text, size_t *len);
/* Scan and load text into c->doc, which must then be deleted; on error nothing is held. */
int cfg_load(cfg *c, const char *text, size_t len);

/* ---------------------------------------------------------------- values (yaml_values.c) */

yaml_node_t *cfg_node(cfg *c, int index);
const char *cfg_text(const yaml_node_t *n);
/* A scalar holding no NUL byte (libyaml terminates every scalar). */
int cfg_is_text(const yaml_node_t *n);
/* YAML's null: a plain empty, ~ or null scalar. */
int cfg_is_null(const yaml_node_t *n);

/* An int in [lo, hi]. */
int cfg_get_int(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, int lo,
                int hi, int *out);
/* A seed: a decimal in 0..2^63-1. */
int cfg_get_u64(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                uint64_t *out);
/* A finite decimal number in [lo, hi]. */
int cfg_get_float(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                  double lo, double hi, float *out);
/* true/false (also yes/no, on/off, as in YAML 1.1) as 1/0. */
int cfg_get_bool(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, int *out);
/* A string shorter than cap (null reads as ""). */
int cfg_get_str(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst,
                size_t cap);
/* A non-empty string (a path) shorter than cap. */
int cfg_get_path(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst,
                 size_t cap);
/* A path from the file c->origin, resolved against that file's directory. */
int cfg_get_relative_path(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                          char *dst, size_t cap);
/* A job or pipeline name ([A-Za-z0-9_.-]+, not starting with . or -) or "", SPEC_NAME_MAX. */
int cfg_get_id(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst);
/* A level name ([a-z0-9_]+) or, if may_be_empty, "", into dst of SPEC_NAME_MAX bytes. */
int cfg_get_level_name(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                       int may_be_empty, char *dst);

/* ---------------------------------------------------------------- maps (yaml_values.c) */

/* Check that n is a map whose keys are among keys[0..nkeys), each at most once, and point
 * vals[i] at the value of keys[i] (NULL when absent). prefix names the map ("" at the top). */
int cfg_map(cfg *c, const yaml_node_t *n, const char *prefix, const char *const *keys, int nkeys,
            yaml_node_t **vals);
/* An error unless key i of map n is present. */
int cfg_require(const cfg *c, const yaml_node_t *n, const char *prefix, const char *const *keys,
                yaml_node_t *const *vals, int i);

#endif
