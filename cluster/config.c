/* Pipeline and job YAML (libyaml) into the coordinator's specs, and level planning.
 *
 * A text is read in two passes: an event scan that reports syntax errors and bounds what the
 * document may cost (one document, nesting depth, node count: libyaml 0.2.5 has no limits of its
 * own, and its tree costs ~150 bytes a node), then yaml_parser_load for the tree. The tree is
 * read by a walk of the known schema only, at a fixed depth, so aliases (even cyclic ones) can
 * neither loop nor multiply the work. */
#include "cluster/config.h"
#include "kernels/kernels.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

enum {
    CFG_MAX_DEPTH = 32,      /* nesting of maps and lists; the schemas need 3 */
    CFG_MAX_NODES = 1 << 20, /* values in one document (an explicit seeds list of ~1M) */
    CFG_SHOW_MAX = 40,       /* characters of a user's text quoted in a message */
    CFG_FIELD_MAX = 128,
};

/* A loaded document and where its errors go. */
typedef struct cfg {
    yaml_document_t doc;
    const char *origin;
    char *err;
    size_t errlen;
} cfg;

/* ------------------------------------------------------------------ messages */

/* Fill err with "ORIGIN:LINE: FIELD: message" (no ":LINE" when line is 0); returns code. */
static int cfg_vfail(const cfg *c, int code, size_t line, const char *field, const char *fmt,
                     va_list ap)
{
    char msg[512], at[32] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (line) snprintf(at, sizeof at, ":%zu", line);
    if (c->errlen) snprintf(c->err, c->errlen, "%s%s: %s: %s", c->origin, at, field, msg);
    return code;
}

/* An input error at 1-based line. */
__attribute__((format(printf, 4, 5))) static int
cfg_fail_line(const cfg *c, size_t line, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = cfg_vfail(c, ERR_INPUT, line, field, fmt, ap);
    va_end(ap);
    return r;
}

/* FIELD for messages: "prefix.key", "key" at the top level (prefix ""), "prefix" when key is
 * NULL. */
static const char *cfg_field(char *dst, size_t cap, const char *prefix, const char *key)
{
    if (!key)
        snprintf(dst, cap, "%s", *prefix ? prefix : "top level");
    else if (!*prefix)
        snprintf(dst, cap, "%s", key);
    else
        snprintf(dst, cap, "%s.%s", prefix, key);
    return dst;
}

/* An input error about node n, which is the field prefix.key. */
__attribute__((format(printf, 5, 6))) static int cfg_fail(const cfg *c, const yaml_node_t *n,
                                                          const char *prefix, const char *key,
                                                          const char *fmt, ...)
{
    char field[CFG_FIELD_MAX];
    va_list ap;
    va_start(ap, fmt);
    int r = cfg_vfail(c, ERR_INPUT, n->start_mark.line + 1,
                      cfg_field(field, sizeof field, prefix, key), fmt, ap);
    va_end(ap);
    return r;
}

/* s (n bytes) as a short printable excerpt, so a message stays one line. */
static const char *cfg_show(const unsigned char *s, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < CFG_SHOW_MAX && o + 4 < cap; i++)
        buf[o++] = isprint(s[i]) ? (char)s[i] : '?';
    if (n > CFG_SHOW_MAX && o + 4 < cap) o += (size_t)snprintf(buf + o, cap - o, "...");
    buf[o] = 0;
    return buf;
}

/* ------------------------------------------------------------------ reading a document */

/* 1-based line of byte offset off (counting '\n'). */
static size_t cfg_line_at(const char *text, size_t len, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        line += text[i] == '\n';
    return line;
}

/* Whether mark m points at a tab (exact for ASCII lines, which is where tabs bite). */
static int cfg_tab_at(const char *text, size_t len, yaml_mark_t m)
{
    size_t i = 0;
    for (size_t line = 0; i < len && line < m.line; i++)
        line += text[i] == '\n';
    return i + m.column < len && text[i + m.column] == '\t';
}

static int cfg_nomem(const cfg *c)
{
    if (c->errlen) snprintf(c->err, c->errlen, "%s: out of memory reading YAML", c->origin);
    return ERR_NOMEM;
}

/* The parser's error as "ORIGIN:LINE: invalid YAML: problem (context)". */
static int cfg_syntax(const cfg *c, const yaml_parser_t *yp, const char *text, size_t len)
{
    char ctx[160] = "";
    if (yp->error == YAML_MEMORY_ERROR) return cfg_nomem(c);
    size_t line = yp->problem_mark.line + 1;
    if (yp->error == YAML_READER_ERROR) line = cfg_line_at(text, len, yp->problem_offset);
    if (yp->context)
        snprintf(ctx, sizeof ctx, " (%s at line %zu)", yp->context, yp->context_mark.line + 1);
    if (yp->error != YAML_READER_ERROR && cfg_tab_at(text, len, yp->problem_mark))
        snprintf(ctx, sizeof ctx, " (a tab: YAML indents with spaces)");
    return cfg_fail_line(c, line, "invalid YAML", "%s%s",
                         yp->problem ? yp->problem : "syntax error", ctx);
}

/* One event of the scan: counts documents, depth and nodes; returns 0 or an error. */
static int cfg_scan_event(const cfg *c, const yaml_event_t *ev, int *docs, int *depth, long *nodes)
{
    size_t line = ev->start_mark.line + 1;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1)
            return cfg_fail_line(c, line, "document", "a second YAML document; one is allowed");
        return 0;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (++*depth > CFG_MAX_DEPTH)
            return cfg_fail_line(c, line, "document", "nested deeper than %d levels",
                                 CFG_MAX_DEPTH);
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        --*depth;
        return 0;
    case YAML_SCALAR_EVENT:
    case YAML_ALIAS_EVENT:
        break;
    default:
        return 0;
    }
    if (++*nodes > CFG_MAX_NODES)
        return cfg_fail_line(c, line, "document", "more than %d values", CFG_MAX_NODES);
    return 0;
}

/* Pass 1: the events of text, for syntax errors and the bounds above. */
static int cfg_scan(const cfg *c, const char *text, size_t len)
{
    yaml_parser_t yp;
    yaml_event_t ev;
    int docs = 0, depth = 0, r = 0, done = 0;
    long nodes = 0;
    if (!yaml_parser_initialize(&yp)) return cfg_nomem(c);
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    while (!done && !r) {
        if (!yaml_parser_parse(&yp, &ev)) {
            r = cfg_syntax(c, &yp, text, len);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        r = cfg_scan_event(c, &ev, &docs, &depth, &nodes);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&yp);
    return r;
}

/* Scan and load text into c->doc, which must then be deleted; on error nothing is held. */
static int cfg_load(cfg *c, const char *text, size_t len)
{
    yaml_parser_t yp;
    if (len > CONFIG_MAX_BYTES)
        return cfg_fail_line(c, 0, "document", "larger than %d MiB", CONFIG_MAX_BYTES >> 20);
    int r = cfg_scan(c, text, len);
    if (r) return r;
    if (!yaml_parser_initialize(&yp)) return cfg_nomem(c);
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &c->doc)) { /* it deletes the document itself */
        r = cfg_syntax(c, &yp, text, len);
        yaml_parser_delete(&yp);
        return r;
    }
    yaml_parser_delete(&yp);
    if (!yaml_document_get_root_node(&c->doc)) {
        yaml_document_delete(&c->doc);
        return cfg_fail_line(c, 1, "top level", "the document is empty");
    }
    return 0;
}

/* "ORIGIN: what: strerror(errnum)"; returns code. */
static int cfg_io_fail(const cfg *c, int code, const char *what, int errnum)
{
    if (c->errlen) snprintf(c->err, c->errlen, "%s: %s: %s", c->origin, what, strerror(errnum));
    return code;
}

/* Read all of fd (at most CONFIG_MAX_BYTES) into a malloc'd buffer. */
static int cfg_read_fd(const cfg *c, int fd, char **text, size_t *len)
{
    size_t cap = 0, n = 0;
    char *buf = NULL;
    for (;;) {
        if (n == cap) {
            if (cap > CONFIG_MAX_BYTES) {
                free(buf);
                return cfg_fail_line(c, 0, "document", "larger than %d MiB",
                                     CONFIG_MAX_BYTES >> 20);
            }
            size_t want = cap ? 2 * cap : 4096;
            if (want > (size_t)CONFIG_MAX_BYTES) want = (size_t)CONFIG_MAX_BYTES + 1;
            char *more = realloc(buf, want);
            if (!more) {
                free(buf);
                return cfg_io_fail(c, ERR_NOMEM, "cannot read", ENOMEM);
            }
            buf = more;
            cap = want;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            return cfg_io_fail(c, ERR_RUNTIME, "cannot read", e);
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    *text = buf;
    *len = n;
    return 0;
}

/* Read the file c->origin names. A file that cannot be opened is bad input (as for models). */
static int cfg_read_file(const cfg *c, char **text, size_t *len)
{
    struct stat st;
    int fd = open(c->origin, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cfg_io_fail(c, ERR_INPUT, "cannot open", errno);
    int r = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)
                ? cfg_io_fail(c, ERR_INPUT, "cannot read", EISDIR)
                : cfg_read_fd(c, fd, text, len);
    close(fd);
    return r;
}

/* ------------------------------------------------------------------ typed values */

static yaml_node_t *cfg_node(cfg *c, int index)
{
    return yaml_document_get_node(&c->doc, index);
}

static const char *cfg_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A scalar holding no NUL byte (libyaml terminates every scalar). */
static int cfg_is_text(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && strlen(cfg_text(n)) == n->data.scalar.length;
}

/* YAML's null: a plain empty, ~ or null scalar. */
static int cfg_is_null(const yaml_node_t *n)
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
static int cfg_get_int(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                       int lo, int hi, int *out)
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
static int cfg_get_u64(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
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
static int cfg_get_float(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
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
static int cfg_get_bool(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                        int *out)
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
static int cfg_get_str(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                       char *dst, size_t cap)
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
static int cfg_get_path(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                        char *dst, size_t cap)
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
static int cfg_get_id(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
                      char *dst)
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
static int cfg_get_level_name(const cfg *c, const yaml_node_t *n, const char *prefix,
                              const char *key, int may_be_empty, char *dst)
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
static int cfg_map(cfg *c, const yaml_node_t *n, const char *prefix, const char *const *keys,
                   int nkeys, yaml_node_t **vals)
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
static int cfg_require(const cfg *c, const yaml_node_t *n, const char *prefix,
                       const char *const *keys, yaml_node_t *const *vals, int i)
{
    return vals[i] ? 0 : cfg_fail(c, n, prefix, keys[i], "missing required key");
}

/* ------------------------------------------------------------------ pipelines */

static const char *const pipeline_keys[] = {"name", "levels"};
enum { PIPELINE_KEY_NAME, PIPELINE_KEY_LEVELS, PIPELINE_KEY_COUNT };

static const char *const level_keys[] = {"name",  "kind",        "model", "side",
                                         "steps", "sampler",     "eta",   "guidance",
                                         "pool",  "noise_level", "tile",  "overlap"};
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
    static const char *const kinds[] = {[LEVEL_KIND_GENERATE] = "generate",
                                        [LEVEL_KIND_REFINE] = "refine",
                                        [LEVEL_KIND_DIRECT] = "direct"};
    char shown[64];
    int k = 0;
    while (k < 3 && !(cfg_is_text(n) && !strcmp(cfg_text(n), kinds[k])))
        k++;
    if (k == 3) {
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
    *kind = (level_kind)k;
    return 0;
}

static int cfg_get_relative_path(const cfg *c, const yaml_node_t *n, const char *prefix,
                                 const char *key, char *dst, size_t cap);

/* The model directory, resolved against the directory of the pipeline file (c->origin). */
static int level_parse_model(const cfg *c, const yaml_node_t *n, const char *prefix, level_spec *l)
{
    return cfg_get_relative_path(c, n, prefix, "model", l->model, sizeof l->model);
}

/* A path from the file c->origin, resolved against that file's directory (absolute paths and
 * files given without a directory are kept). */
static int cfg_get_relative_path(const cfg *c, const yaml_node_t *n, const char *prefix,
                                 const char *key, char *dst, size_t cap)
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

/* tile (0 or a multiple of 8, at most side) and overlap (smaller than tile). */
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
                            char *err, size_t errlen)
{
    cfg c = {.origin = origin, .err = err, .errlen = err ? errlen : 0};
    memset(p, 0, sizeof *p);
    if (c.errlen) err[0] = 0;
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

int pipeline_load(const char *path, pipeline_spec *p, char *err, size_t errlen)
{
    cfg c = {.origin = path, .err = err, .errlen = err ? errlen : 0};
    char *text = NULL;
    size_t len = 0;
    memset(p, 0, sizeof *p);
    int r = cfg_read_file(&c, &text, &len);
    if (!r) r = pipeline_from_yaml_text(text, len, path, p, err, errlen);
    free(text);
    return r;
}

/* ------------------------------------------------------------------ jobs */

static const char *const job_keys[] = {"pipeline",    "name",        "count",       "seed",
                                       "seeds",       "resolution",  "out",         "priority",
                                       "class_label", "keep_levels", "start_level", "init_images"};
enum {
    JOB_KEY_PIPELINE,
    JOB_KEY_NAME,
    JOB_KEY_COUNT,
    JOB_KEY_SEED,
    JOB_KEY_SEEDS,
    JOB_KEY_RESOLUTION,
    JOB_KEY_OUT,
    JOB_KEY_PRIORITY,
    JOB_KEY_CLASS_LABEL,
    JOB_KEY_KEEP_LEVELS,
    JOB_KEY_START_LEVEL,
    JOB_KEY_INIT_IMAGES,
    JOB_KEY_COUNT_
};
_Static_assert(sizeof job_keys / sizeof job_keys[0] == JOB_KEY_COUNT_, "job_keys");

void job_defaults(job_spec *j)
{
    memset(j, 0, sizeof *j);
    j->count = 1;
    j->class_label = -1;
    snprintf(j->out, sizeof j->out, "out");
}

/* The explicit seeds list (malloc'd into j->seeds) and count: the list's length, or equal to it. */
static int job_parse_seeds(cfg *c, yaml_node_t **v, job_spec *j)
{
    const yaml_node_t *n = v[JOB_KEY_SEEDS];
    char field[32];
    if (v[JOB_KEY_SEED])
        return cfg_fail(c, n, "", "seeds", "give seed (the first of count) or seeds, not both");
    long count = n->type == YAML_SEQUENCE_NODE
                     ? n->data.sequence.items.top - n->data.sequence.items.start
                     : 0;
    if (count < 1 || count > CONFIG_MAX_COUNT)
        return cfg_fail(c, n, "", "seeds", "expected a list of 1..%d integers", CONFIG_MAX_COUNT);
    if (v[JOB_KEY_COUNT] && j->count != count)
        return cfg_fail(c, v[JOB_KEY_COUNT], "", "count", "%d, but seeds lists %ld", j->count,
                        count);
    j->seeds = malloc((size_t)count * sizeof *j->seeds);
    if (!j->seeds) {
        cfg_fail(c, n, "", "seeds", "out of memory");
        return ERR_NOMEM;
    }
    for (long i = 0; i < count; i++) {
        snprintf(field, sizeof field, "seeds[%ld]", i);
        int r =
            cfg_get_u64(c, cfg_node(c, n->data.sequence.items.start[i]), field, NULL, &j->seeds[i]);
        if (r) return r;
    }
    j->count = (int)count;
    return 0;
}

/* start_level and init_images: both or neither. */
static int job_parse_start(const cfg *c, const yaml_node_t *root, yaml_node_t **v, job_spec *j)
{
    const yaml_node_t *start = v[JOB_KEY_START_LEVEL], *init = v[JOB_KEY_INIT_IMAGES];
    int r = cfg_get_level_name(c, start, "", "start_level", 1, j->start_level);
    if (!r) r = cfg_get_str(c, init, "", "init_images", j->init_images, sizeof j->init_images);
    if (!r && *j->start_level && !*j->init_images)
        r = cfg_fail(c, init ? init : root, "", "init_images", "needed with start_level");
    if (!r && *j->init_images && !*j->start_level)
        r = cfg_fail(c, start ? start : root, "", "start_level", "needed with init_images");
    return r;
}

/* The whole job document. */
static int job_parse(cfg *c, job_spec *j)
{
    yaml_node_t *root = yaml_document_get_root_node(&c->doc), *v[JOB_KEY_COUNT_];
    int r = cfg_map(c, root, "", job_keys, JOB_KEY_COUNT_, v);
    if (!r) r = cfg_require(c, root, "", job_keys, v, JOB_KEY_PIPELINE);
    if (!r) r = cfg_require(c, root, "", job_keys, v, JOB_KEY_RESOLUTION);
    if (!r)
        r = cfg_get_path(c, v[JOB_KEY_PIPELINE], "", "pipeline", j->pipeline, sizeof j->pipeline);
    if (!r) r = cfg_get_id(c, v[JOB_KEY_NAME], "", "name", j->name);
    if (!r) r = cfg_get_int(c, v[JOB_KEY_COUNT], "", "count", 1, CONFIG_MAX_COUNT, &j->count);
    if (!r) r = cfg_get_u64(c, v[JOB_KEY_SEED], "", "seed", &j->seed);
    if (!r && v[JOB_KEY_SEEDS]) r = job_parse_seeds(c, v, j);
    if (!r)
        r = cfg_get_int(c, v[JOB_KEY_RESOLUTION], "", "resolution", 1, CONFIG_MAX_SIDE,
                        &j->resolution);
    if (!r) r = cfg_get_path(c, v[JOB_KEY_OUT], "", "out", j->out, sizeof j->out);
    if (!r) r = cfg_get_int(c, v[JOB_KEY_PRIORITY], "", "priority", INT_MIN, INT_MAX, &j->priority);
    if (!r)
        r = cfg_get_int(c, v[JOB_KEY_CLASS_LABEL], "", "class_label", -1, INT_MAX, &j->class_label);
    if (!r) r = cfg_get_bool(c, v[JOB_KEY_KEEP_LEVELS], "", "keep_levels", &j->keep_levels);
    if (!r) r = job_parse_start(c, root, v, j);
    return r;
}

int job_spec_from_yaml_text(const char *text, size_t len, const char *origin, job_spec *j,
                            char *err, size_t errlen)
{
    cfg c = {.origin = origin, .err = err, .errlen = err ? errlen : 0};
    job_defaults(j);
    if (c.errlen) err[0] = 0;
    int r = cfg_load(&c, text, len);
    if (r) return r;
    r = job_parse(&c, j);
    yaml_document_delete(&c.doc);
    if (r) {
        job_spec_free(j);
        job_defaults(j);
    }
    return r;
}

int job_load(const char *path, job_spec *j, char *err, size_t errlen)
{
    cfg c = {.origin = path, .err = err, .errlen = err ? errlen : 0};
    char *text = NULL;
    size_t len = 0;
    job_defaults(j);
    int r = cfg_read_file(&c, &text, &len);
    if (!r) r = job_spec_from_yaml_text(text, len, path, j, err, errlen);
    free(text);
    return r;
}

/* ------------------------------------------------------------------ planning */

/* "FIELD: message" (planning has no file or line); returns ERR_INPUT. */
__attribute__((format(printf, 3, 4))) static int plan_fail(char *err, size_t errlen,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return ERR_INPUT;
}

/* ------------------------------------------------------------------ coordinator */

static const char *const coordinator_keys[] = {
    "pipeline", "workers", "clients", "heartbeat_ms", "liveness", "max_in_flight", "verbose"};
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
    return r;
}

int coordinator_config_load(const char *path, coordinator_config *o, char *err, size_t errlen)
{
    cfg c = {.origin = path, .err = err, .errlen = err ? errlen : 0};
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

int plan_levels(const pipeline_spec *p, int resolution, int *nlevels, char *err, size_t errlen)
{
    if (resolution < 1 || resolution > CONFIG_MAX_SIDE)
        return plan_fail(err, errlen, "resolution: expected an integer 1..%d, got %d",
                         CONFIG_MAX_SIDE, resolution);
    if (p->nlevels < 1 || p->nlevels > PIPELINE_MAX_LEVELS)
        return plan_fail(err, errlen, "%s: pipeline has %d levels", p->path, p->nlevels);
    int n = 1;
    while (n < p->nlevels && p->levels[n - 1].side < resolution)
        n++;
    /* When even the last side is below resolution, n is nlevels: all run, then resize up. */
    *nlevels = n;
    return 0;
}

int plan_start_level(const pipeline_spec *p, const char *start_level, int *index, char *err,
                     size_t errlen)
{
    char names[PIPELINE_MAX_LEVELS * (SPEC_NAME_MAX + 2)], shown[64];
    const char *list[PIPELINE_MAX_LEVELS];
    int n = p->nlevels < PIPELINE_MAX_LEVELS ? p->nlevels : PIPELINE_MAX_LEVELS;
    if (!start_level || !*start_level) {
        *index = 0;
        return 0;
    }
    for (int i = 0; i < n; i++) {
        list[i] = p->levels[i].name;
        if (strcmp(start_level, list[i])) continue;
        if (p->levels[i].kind == LEVEL_KIND_GENERATE)
            return plan_fail(err, errlen,
                             "start_level: %s is a generate level; start at a refine or direct "
                             "level (its input is init_images)",
                             start_level);
        *index = i;
        return 0;
    }
    cfg_show((const unsigned char *)start_level, strlen(start_level), shown, sizeof shown);
    return plan_fail(err, errlen, "start_level: no level \"%s\" in pipeline %s (levels: %s)", shown,
                     p->name, cfg_key_list(list, n, names, sizeof names));
}
