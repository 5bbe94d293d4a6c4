/* The YAML reader's values: typed scalars (strict: no YAML 1.1 octal or sexagesimal
 * surprises, ranges checked) and maps of known keys, each error naming the field and line. */
#include "cluster/yaml.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ typed values */

yaml_node_t *cfg_node(cfg *c, int index)
{
    return yaml_document_get_node(&c->doc, index);
}

const char *cfg_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A scalar holding no NUL byte (libyaml terminates every scalar). */
int cfg_is_text(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && strlen(cfg_text(n)) == n->data.scalar.length;
}

/* YAML's null: a plain empty, ~ or null scalar. */
int cfg_is_null(const yaml_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    if (!cfg_is_text(n) || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (!strcmp(cfg_text(n), nulls[i])) return 1;
    return 0;
}

/* Strict decimal [+-]?[0-9]+ within [lo, hi]. */
static int cfg_parse_ll(const yaml_node_t *n, long long lo, long long hi, long long *out)
{
    if (!cfg_is_text(n)) return -1;
    const char *s = cfg_text(n);
    size_t i = s[0] == '+' || s[0] == '-';
    if (!s[i]) return -1;
    for (size_t k = i; s[k]; k++)
        if (!isdigit((unsigned char)s[k])) return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* An int in [lo, hi] into *out; n == NULL (key absent) leaves *out as it is. */
int cfg_get_int(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, int lo,
                int hi, int *out)
{
    long long v;
    if (!n) return 0;
    if (cfg_parse_ll(n, lo, hi, &v) == 0) {
        *out = (int)v;
        return 0;
    }
    if (lo == 1 && hi == INT_MAX) return cfg_fail(c, n, prefix, key, "expected a positive integer");
    if (lo == INT_MIN && hi == INT_MAX) return cfg_fail(c, n, prefix, key, "expected an integer");
    if (hi == INT_MAX) return cfg_fail(c, n, prefix, key, "expected an integer >= %d", lo);
    return cfg_fail(c, n, prefix, key, "expected an integer %d..%d", lo, hi);
}

/* A seed: a decimal in 0..2^63-1 into *out (n == NULL: unchanged). JSON tools, the manifest
 * included, read integers as signed 64-bit. */
int cfg_get_u64(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                uint64_t *out)
{
    if (!n) return 0;
    const char *s = cfg_is_text(n) ? cfg_text(n) : "";
    int ok = *s != 0;
    for (size_t k = 0; s[k]; k++)
        ok &= isdigit((unsigned char)s[k]) != 0;
    errno = 0;
    unsigned long long v = ok ? strtoull(s, NULL, 10) : 0;
    if (!ok || errno || v > (unsigned long long)INT64_MAX)
        return cfg_fail(c, n, prefix, key, "expected an integer 0..%lld", (long long)INT64_MAX);
    *out = (uint64_t)v;
    return 0;
}

/* A finite decimal number in [lo, hi] into *out (n == NULL: unchanged). */
int cfg_get_float(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                  double lo, double hi, float *out)
{
    if (!n) return 0;
    const char *s = cfg_is_text(n) ? cfg_text(n) : "";
    char *end = NULL;
    int ok = *s && strspn(s, "0123456789+-.eE") == strlen(s);
    double v = ok ? strtod(s, &end) : NAN;
    if (!ok || *end || !isfinite(v) || v < lo || v > hi) {
        if (hi < HUGE_VAL) return cfg_fail(c, n, prefix, key, "expected a number %g..%g", lo, hi);
        return cfg_fail(c, n, prefix, key, "expected a number >= %g", lo);
    }
    *out = (float)v;
    return 0;
}

/* true/false (also yes/no, on/off, as in YAML 1.1) into *out (n == NULL: unchanged). */
int cfg_get_bool(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, int *out)
{
    static const char *const words[] = {"false", "False", "FALSE", "no",   "No",   "NO",
                                        "off",   "Off",   "OFF",   "true", "True", "TRUE",
                                        "yes",   "Yes",   "YES",   "on",   "On",   "ON"};
    enum { NWORDS = sizeof words / sizeof words[0] };
    for (int i = 0; n && cfg_is_text(n) && i < NWORDS; i++) {
        if (!strcmp(cfg_text(n), words[i])) {
            *out = i >= NWORDS / 2;
            return 0;
        }
    }
    return n ? cfg_fail(c, n, prefix, key, "expected true or false") : 0;
}

/* A string shorter than cap into dst (null reads as ""; n == NULL: unchanged). */
int cfg_get_str(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst,
                size_t cap)
{
    if (!n) return 0;
    if (n->type != YAML_SCALAR_NODE) return cfg_fail(c, n, prefix, key, "expected a string");
    if (!cfg_is_text(n)) return cfg_fail(c, n, prefix, key, "contains a NUL character");
    const char *s = cfg_is_null(n) ? "" : cfg_text(n);
    if (strlen(s) >= cap) return cfg_fail(c, n, prefix, key, "longer than %zu characters", cap - 1);
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

/* A non-empty string (a path) shorter than cap into dst (n == NULL: unchanged). */
int cfg_get_path(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst,
                 size_t cap)
{
    int r = cfg_get_str(c, n, prefix, key, dst, cap);
    if (!r && n && !*dst) return cfg_fail(c, n, prefix, key, "expected a path, got nothing");
    return r;
}

/* Level names: [a-z0-9_]+. */
static int cfg_level_name_ok(const char *s)
{
    return *s && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(s);
}

/* Job and pipeline names: [A-Za-z0-9_.-]+, not starting with '.' or '-' (they become directory
 * names and command-line arguments: ".." or "-x" must not). */
static int cfg_id_ok(const char *s)
{
    return *s && *s != '.' && *s != '-' &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
               strlen(s);
}

/* An identifier (cfg_id_ok) or "" into dst of SPEC_NAME_MAX bytes (n == NULL: unchanged). */
int cfg_get_id(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key, char *dst)
{
    char shown[64];
    int r = cfg_get_str(c, n, prefix, key, dst, SPEC_NAME_MAX);
    if (!r && n && *dst && !cfg_id_ok(dst))
        return cfg_fail(c, n, prefix, key,
                        "expected letters, digits, _ . - (not first: . -), got \"%s\"",
                        cfg_show((const unsigned char *)dst, strlen(dst), shown, sizeof shown));
    return r;
}

/* A level name (cfg_level_name_ok) or, if may_be_empty, "" into dst (n == NULL: unchanged). */
int cfg_get_level_name(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                       int may_be_empty, char *dst)
{
    char shown[64];
    int r = cfg_get_str(c, n, prefix, key, dst, SPEC_NAME_MAX);
    if (!r && n && (*dst || !may_be_empty) && !cfg_level_name_ok(dst))
        return cfg_fail(c, n, prefix, key,
                        "expected lowercase letters, digits and _ only, got \"%s\"",
                        cfg_show((const unsigned char *)dst, strlen(dst), shown, sizeof shown));
    return r;
}

/* ------------------------------------------------------------------ maps */

/* keys[0..n) as "a, b, c" for messages. */
static const char *cfg_key_list(const char *const *keys, int n, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", keys[i]);
    return buf;
}

/* The index in keys of key node k, or an error naming it. */
static int cfg_key(const cfg *c, const yaml_node_t *k, const char *prefix, const char *const *keys,
                   int nkeys)
{
    char shown[64], list[256];
    if (k->type != YAML_SCALAR_NODE) return cfg_fail(c, k, prefix, NULL, "expected a key name");
    for (int i = 0; i < nkeys; i++)
        if (cfg_is_text(k) && !strcmp(cfg_text(k), keys[i])) return i;
    cfg_show(k->data.scalar.value, k->data.scalar.length, shown, sizeof shown);
    return cfg_fail(c, k, prefix, shown, "unknown key (known: %s)",
                    cfg_key_list(keys, nkeys, list, sizeof list));
}

/* Check that n is a map whose keys are among keys[0..nkeys), each at most once, and point
 * vals[i] at the value of keys[i] (NULL when absent). prefix names the map ("" at the top). */
int cfg_map(cfg *c, const yaml_node_t *n, const char *prefix, const char *const *keys, int nkeys,
            yaml_node_t **vals)
{
    char list[256];
    if (n->type != YAML_MAPPING_NODE)
        return cfg_fail(c, n, prefix, NULL, "expected a map of keys (%s)",
                        cfg_key_list(keys, nkeys, list, sizeof list));
    for (int i = 0; i < nkeys; i++)
        vals[i] = NULL;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = cfg_node(c, pr->key);
        int i = cfg_key(c, k, prefix, keys, nkeys);
        if (i < 0) return i;
        if (vals[i]) return cfg_fail(c, k, prefix, keys[i], "duplicate key");
        vals[i] = cfg_node(c, pr->value);
    }
    return 0;
}

/* An error unless key i of map n is present. */
int cfg_require(const cfg *c, const yaml_node_t *n, const char *prefix, const char *const *keys,
                yaml_node_t *const *vals, int i)
{
    return vals[i] ? 0 : cfg_fail(c, n, prefix, keys[i], "missing required key");
}

/* A path from the file c->origin, resolved against that file's directory (absolute paths and
 * files given without a directory are kept). */
int cfg_get_relative_path(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                          char *dst, size_t cap)
{
    char path[SPEC_PATH_MAX];
    const char *slash = strrchr(c->origin, '/');
    int r = cfg_get_path(c, n, prefix, key, path, sizeof path), len;
    if (r || !n) return r;
    if (path[0] == '/' || !slash)
        len = snprintf(dst, cap, "%s", path);
    else
        len = snprintf(dst, cap, "%.*s/%s", (int)(slash - c->origin), c->origin, path);
    if (len < 0 || (size_t)len >= cap)
        return cfg_fail(c, n, prefix, key, "longer than %zu characters once resolved", cap - 1);
    return 0;
}
