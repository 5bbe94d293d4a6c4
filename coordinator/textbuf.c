/* The text buffer of the HTTP pages (see textbuf.h). */
#include "coordinator/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for n more bytes and a NUL; 0, or -1 (and oom set). */
static int reserve(coord_text *t, size_t n)
{
    if (t->oom) return -1;
    if (t->len + n + 1 <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + n + 1)
        cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->oom = 1;
        return -1;
    }
    t->buf = b;
    t->cap = cap;
    return 0;
}

static void put_n(coord_text *t, const char *s, size_t n)
{
    if (reserve(t, n) < 0) return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

void coord_text_put(coord_text *t, const char *s)
{
    put_n(t, s, strlen(s));
}

void coord_text_printf(coord_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(t, (size_t)n) < 0) return;
    va_start(ap, fmt);
    vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void coord_text_label(coord_text *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put_n(t, "\\\\", 2);
        else if (*s == '"')
            put_n(t, "\\\"", 2);
        else if (*s == '\n')
            put_n(t, "\\n", 2);
        else
            put_n(t, s, 1);
    }
}

void coord_text_html(coord_text *t, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            coord_text_put(t, "&amp;");
            break;
        case '<':
            coord_text_put(t, "&lt;");
            break;
        case '>':
            coord_text_put(t, "&gt;");
            break;
        case '"':
            coord_text_put(t, "&quot;");
            break;
        case '\'':
            coord_text_put(t, "&#39;");
            break;
        default:
            put_n(t, s, 1);
        }
    }
}

void coord_text_url(coord_text *t, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("._~-", *p)) {
            put_n(t, (const char *)p, 1);
        } else {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            put_n(t, esc, 3);
        }
    }
}

int coord_text_failed(const coord_text *t)
{
    return t->oom;
}

char *coord_text_take(coord_text *t, size_t *len)
{
    char *b = t->oom ? NULL : t->buf ? t->buf : calloc(1, 1);
    if (t->oom) free(t->buf);
    *len = b ? t->len : 0;
    *t = (coord_text){0};
    return b;
}

void coord_text_free(coord_text *t)
{
    free(t->buf);
    *t = (coord_text){0};
}
