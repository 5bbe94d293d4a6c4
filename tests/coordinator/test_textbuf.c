/* The text buffer of the coordinator's HTTP pages: appends grow it, and each escape writes what
 * its format asks (Prometheus label values, HTML, URL path segments). */
#include "coordinator/textbuf.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

TEST(textbuf_escapes_per_format)
{
    coord_text t = {0};
    coord_text_label(&t, "a\\b\"c\nd");
    coord_text_put(&t, "|");
    coord_text_html(&t, "<a href='x'>&\"</a>");
    coord_text_put(&t, "|");
    coord_text_url(&t, "job 1/../é_~.-");
    size_t len;
    char *s = coord_text_take(&t, &len);
    CHECK(s && len == strlen(s));
    CHECKF(!strcmp(s, "a\\\\b\\\"c\\nd|&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;|"
                      "job%201%2F..%2F%C3%A9_~.-"),
           "got %s", s);
    free(s);
    CHECK(t.buf == NULL && t.len == 0);
}

TEST(textbuf_grows_past_its_first_block)
{
    coord_text t = {0};
    for (int i = 0; i < 10000; i++)
        coord_text_printf(&t, "%05d\n", i);
    CHECK(!coord_text_failed(&t) && t.len == 60000);
    CHECK(!strncmp(t.buf + 59994, "09999\n", 6) && t.buf[t.len] == 0);
    coord_text_free(&t);
    size_t len = 1;
    char *s = coord_text_take(&t, &len); /* nothing appended: an empty string */
    CHECK(s && len == 0 && *s == 0);
    free(s);
}
