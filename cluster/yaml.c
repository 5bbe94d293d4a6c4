/* The YAML reader's documents: reading a file within bounds, the two-pass load (yaml.h says
 * why), and the one-line error messages every schema's errors go through. */
#include "cluster/yaml.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    CFG_MAX_DEPTH = 32,      /* nesting of maps and lists; the schemas need 3 */
    CFG_MAX_NODES = 1 << 20, /* values in one document (an explicit seeds list of ~1M) */
    CFG_SHOW_MAX = 40,       /* characters of a user's text quoted in a message */
    CFG_FIELD_MAX = 128,
};

/* ------------------------------------------------------------------ messages */

/* Fill err with "ORIGIN:LINE: FIELD: message" (no ":LINE" when line is 0); returns code. */
static int cfg_vfail(const cfg *c, int code, size_t line, const char *field, const char *fmt,
                     va_list ap)
{
    char msg[512], at[32] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (line) snprintf(at, sizeof at, ":%zu", line);
    return err_set(c->e, code, "%s%s: %s: %s", c->origin, at, field, msg);
}

int cfg_fail_line(const cfg *c, size_t line, const char *field, const char *fmt, ...)
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

int cfg_fail(const cfg *c, const yaml_node_t *n, const char *prefix, const char *key,
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

const char *cfg_show(const unsigned char *s, size_t n, char *buf, size_t cap)
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
    return err_set(c->e, ERR_NOMEM, "%s: out of memory reading YAML", c->origin);
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

int cfg_load(cfg *c, const char *text, size_t len)
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
    return err_set(c->e, code, "%s: %s: %s", c->origin, what, strerror(errnum));
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

/* A file that cannot be opened is bad input, as for models. */
int cfg_read_file(const cfg *c, char **text, size_t *len)
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
