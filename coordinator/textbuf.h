/* coordinator internal: a growing text buffer for the HTTP pages (metrics, status page, JSON),
 * with the escapes each format needs. Out of memory sticks: later appends do nothing and
 * coord_text_failed says so, so a page is built without checking every append. A leaf. */
#ifndef STRATA_COORD_TEXTBUF_H
#define STRATA_COORD_TEXTBUF_H

#include <stddef.h>

typedef struct coord_text {
    char *buf;
    size_t len, cap;
    int oom; /* an append failed: the text is incomplete */
} coord_text;

/* Append printf-style text. */
void coord_text_printf(coord_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void coord_text_put(coord_text *t, const char *s);
/* s as a Prometheus label value (inside the quotes): backslash, double quote and newline
 * escaped (the text exposition format). */
void coord_text_label(coord_text *t, const char *s);
/* s as HTML text or an attribute value (& < > " ' escaped). */
void coord_text_html(coord_text *t, const char *s);
/* s as a URL path segment: every byte but [A-Za-z0-9._~-] percent-encoded. */
void coord_text_url(coord_text *t, const char *s);
/* 1 when an append ran out of memory. */
int coord_text_failed(const coord_text *t);
/* The text (malloc'd, NUL-terminated) passes to the caller, who frees it; t is empty again.
 * NULL when out of memory (nothing to free). */
char *coord_text_take(coord_text *t, size_t *len);
void coord_text_free(coord_text *t);

#endif
