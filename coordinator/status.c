/* The status page at / (HTML and CSS, nothing loaded from elsewhere, no script; it reloads itself
 * every STATUS_REFRESH_S) and its data at /status.json: jobs with a progress bar per level, images
 * per hour, workers per level and each job's latest image (/jobs/NAME/latest.png, http.c). Read
 * on the loop's thread at each request. */
#include "coordinator/coord_internal.h"
#include "coordinator/textbuf.h"

#include <jansson.h>
#include <stdlib.h>

enum {
    STATUS_REFRESH_S = 5,
    STATUS_ENDED_SHOWN = 20, /* ended jobs on the page, newest first (all in the JSON) */
};

static const char status_style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}"
    "table{border-collapse:collapse}td,th{padding:.2em .7em;text-align:left}"
    "th{border-bottom:1px solid #ccc;font-weight:600}"
    ".job{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:.8em 0;"
    "display:flex;gap:1.5em;align-items:flex-start}"
    ".job h3{margin:0 0 .4em;font-size:1.05em}.state{font-weight:400;color:#666}"
    "progress{width:16em;height:1em}.latest{width:128px;height:128px;object-fit:contain;"
    "image-rendering:pixelated;border:1px solid #ddd;background:#eee}"
    ".none{width:128px;height:128px;display:flex;align-items:center;justify-content:center;"
    "color:#888;border:1px dashed #ccc}.muted{color:#666}";

/* Images of j written per hour since it was accepted (until it ended). */
static double images_per_hour(const coord_job *j, long long now)
{
    long long end = j->ended_ms ? j->ended_ms : now;
    long long ms = end - j->added_ms;
    return ms > 0 ? (double)j->done * 3600000.0 / (double)ms : 0.0;
}

/* Workers and ranks of level l. */
static void level_workers(const coord_t *c, int l, uint32_t *workers, uint32_t *ranks)
{
    *workers = *ranks = 0;
    for (uint32_t i = 0; i < coord_registry_size(c->workers); i++) {
        const coord_worker *w = coord_registry_at(c->workers, i);
        if (w->level != l) continue;
        (*workers)++;
        *ranks += w->ranks ? w->ranks : 1;
    }
}

static void html_workers(const coord_t *c, coord_text *t)
{
    coord_text_put(t, "<h2>Workers</h2><table><tr><th>level</th><th>side</th><th>workers</th>"
                      "<th>ranks</th></tr>");
    for (int l = 0; l < c->pipe.nlevels; l++) {
        uint32_t n, ranks;
        level_workers(c, l, &n, &ranks);
        coord_text_put(t, "<tr data-level=\"");
        coord_text_html(t, c->pipe.levels[l].name);
        coord_text_put(t, "\"><td>");
        coord_text_html(t, c->pipe.levels[l].name);
        coord_text_printf(t, "</td><td>%d</td><td class=\"workers\">%u</td><td>%u</td></tr>",
                          c->pipe.levels[l].side, n, ranks);
    }
    coord_text_put(t, "</table>");
}

/* One job: its levels' progress, its rate, its latest image. */
static void html_job(const coord_t *c, const coord_job *j, long long now, coord_text *t)
{
    coord_text_put(t, "<section class=\"job\" data-job=\"");
    coord_text_html(t, j->id);
    coord_text_put(t, "\"><div><h3>");
    coord_text_html(t, j->id);
    coord_text_printf(t, " <span class=\"state\">%s</span></h3>", coord_job_state_shown(j));
    if (j->state == COORD_JOB_RUNNING && j->stalled && j->stall) {
        coord_text_put(t, "<p class=\"stall\">");
        coord_text_html(t, j->stall);
        coord_text_put(t, "</p>");
    }
    coord_text_put(t, "<table>");
    for (int l = j->first; l < j->end; l++) {
        const coord_level_count *lv = &j->lv[l];
        coord_text_put(t, "<tr data-level=\"");
        coord_text_html(t, c->pipe.levels[l].name);
        coord_text_put(t, "\"><td>");
        coord_text_html(t, c->pipe.levels[l].name);
        coord_text_printf(t,
                          "</td><td><progress max=\"%u\" value=\"%u\"></progress></td>"
                          "<td>%u / %u</td><td class=\"muted\">%u running, %u queued</td></tr>",
                          j->count, lv->done, lv->done, j->count, lv->running, lv->queued);
    }
    coord_text_printf(t,
                      "</table><p>%u written, %u failed of %u &middot; %.0f images/hour</p></div>",
                      j->done, j->failed, j->count, images_per_hour(j, now));
    if (j->latest) {
        coord_text_put(t, "<img class=\"latest\" alt=\"latest image\" src=\"/jobs/");
        coord_text_url(t, j->id);
        coord_text_printf(t, "/latest.png?i=%u\">", j->latest - 1);
    } else {
        coord_text_put(t, "<div class=\"none\">no image yet</div>");
    }
    coord_text_put(t, "</section>");
}

/* Images per hour of the running jobs together. */
static double farm_rate(const coord_t *c, long long now)
{
    double rate = 0;
    for (uint32_t i = 0; i < coord_jobs_running(c->jobs); i++)
        rate += images_per_hour(coord_jobs_running_at(c->jobs, i), now);
    return rate;
}

void coord_status_html(coord_t *c, coord_text *t)
{
    long long now = clock_now_ms();
    coord_text_printf(t,
                      "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                      "<meta http-equiv=\"refresh\" content=\"%d\"><title>strata: ",
                      STATUS_REFRESH_S);
    coord_text_html(t, c->pipe.name);
    coord_text_printf(
        t, "</title><style>%s</style></head><body><h1>strata coordinator: ", status_style);
    coord_text_html(t, c->pipe.name);
    coord_text_printf(t,
                      "</h1><p class=\"muted\">jobs running: %u &middot; workers: %u &middot; "
                      "%.0f images/hour (running jobs)"
                      "%s%s &middot; <a href=\"/metrics\">metrics</a></p>",
                      coord_jobs_running(c->jobs), coord_registry_size(c->workers),
                      farm_rate(c, now), *c->state_error ? " &middot; state: " : "",
                      *c->state_error ? "refusing new jobs" : "");
    html_workers(c, t);
    coord_text_put(t, "<h2>Jobs</h2>");
    uint32_t n = coord_jobs_count(c->jobs), ended = 0;
    if (!n) coord_text_put(t, "<p class=\"muted\">no jobs yet</p>");
    for (uint32_t i = n; i-- > 0;) { /* newest first */
        const coord_job *j = coord_jobs_at(c->jobs, i);
        if (j->state == COORD_JOB_RUNNING || ended++ < STATUS_ENDED_SHOWN) html_job(c, j, now, t);
    }
    if (ended > STATUS_ENDED_SHOWN)
        coord_text_printf(t, "<p class=\"muted\">%u older ended jobs not shown</p>",
                          ended - STATUS_ENDED_SHOWN);
    coord_text_put(t, "</body></html>\n");
}

static json_t *json_job(const coord_t *c, const coord_job *j, long long now)
{
    json_t *levels = json_array();
    for (int l = j->first; l < j->end; l++)
        json_array_append_new(
            levels, json_pack("{s:s, s:I, s:I, s:I}", "level", c->pipe.levels[l].name, "done",
                              (json_int_t)j->lv[l].done, "running", (json_int_t)j->lv[l].running,
                              "queued", (json_int_t)j->lv[l].queued));
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:o}", "job", j->id, "state",
                          coord_job_state_shown(j), "count", (json_int_t)j->count, "written",
                          (json_int_t)j->done, "failed", (json_int_t)j->failed, "images_per_hour",
                          images_per_hour(j, now), "levels", levels);
    if (o && j->state == COORD_JOB_RUNNING && j->stalled && j->stall)
        json_object_set_new(o, "reason", json_string(j->stall));
    return o;
}

void coord_status_json(coord_t *c, coord_text *t)
{
    long long now = clock_now_ms();
    json_t *root = json_object(), *jobs = json_array(), *workers = json_array();
    for (int l = 0; l < c->pipe.nlevels; l++) {
        uint32_t n, ranks;
        level_workers(c, l, &n, &ranks);
        json_array_append_new(workers,
                              json_pack("{s:s, s:I, s:I}", "level", c->pipe.levels[l].name,
                                        "workers", (json_int_t)n, "ranks", (json_int_t)ranks));
    }
    for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++)
        json_array_append_new(jobs, json_job(c, coord_jobs_at(c->jobs, i), now));
    json_object_set_new(root, "pipeline", json_string(c->pipe.name));
    json_object_set_new(root, "workers", workers);
    json_object_set_new(root, "jobs", jobs);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s)
        coord_text_put(t, s);
    else
        t->oom = 1;
    free(s);
}
