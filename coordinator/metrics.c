/* /metrics: the coordinator's counts in the Prometheus text exposition format (version 0.0.4),
 * every family named strata_* with its HELP and TYPE, labels level= and job=. Everything is
 * read from the parts at the moment of the request (the loop's thread): nothing is kept for
 * it but the job table's retired counts and the write error count. Per-job series cover the
 * jobs the table keeps (running and the last COORD_KEEP_ENDED ended ones); per-level totals
 * add what the forgotten ones counted, so counters only go up until a restart. */
#include "coordinator/coord_internal.h"
#include "coordinator/textbuf.h"

#include <inttypes.h>

static void family(coord_text *t, const char *name, const char *type, const char *help)
{
    coord_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample NAME{level="L",job="J"} V; either label may be NULL. */
static void sample(coord_text *t, const char *name, const char *level, const char *job, uint64_t v)
{
    coord_text_put(t, name);
    if (level || job) coord_text_put(t, "{");
    if (level) {
        coord_text_put(t, "level=\"");
        coord_text_label(t, level);
        coord_text_put(t, job ? "\"," : "\"");
    }
    if (job) {
        coord_text_put(t, "job=\"");
        coord_text_label(t, job);
        coord_text_put(t, "\"");
    }
    coord_text_printf(t, "%s %" PRIu64 "\n", level || job ? "}" : "", v);
}

enum job_level_field { JL_QUEUED, JL_RUNNING, JL_DONE, JL_FAILED };

static uint64_t job_level_value(const coord_level_count *lv, enum job_level_field f)
{
    switch (f) {
    case JL_QUEUED:
        return lv->queued;
    case JL_RUNNING:
        return lv->running;
    case JL_DONE:
        return lv->done;
    default:
        return lv->ended > lv->done ? lv->ended - lv->done : 0;
    }
}

/* The per-job, per-level families: tasks queued, running, done, failed. */
static void job_levels(coord_t *c, coord_text *t)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"strata_tasks_queued", "gauge", "Tasks waiting for a worker of their level."},
        {"strata_tasks_running", "gauge", "Tasks leased to a worker (in flight)."},
        {"strata_tasks_done_total", "counter", "Tasks whose result came back good."},
        {"strata_tasks_failed_total", "counter",
         "Task attempts that failed or lost their worker (each is retried or fails its image)."},
    };
    for (int f = 0; f < 4; f++) {
        family(t, fams[f].name, fams[f].type, fams[f].help);
        for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++) {
            const coord_job *j = coord_jobs_at(c->jobs, i);
            for (int l = j->first; l < j->end; l++)
                sample(t, fams[f].name, c->pipe.levels[l].name, j->id,
                       job_level_value(&j->lv[l], (enum job_level_field)f));
        }
    }
}

/* The per-job families: images asked, written, failed, and whether it runs. */
static void jobs(coord_t *c, coord_text *t)
{
    static const char *const names[] = {"strata_job_images", "strata_job_images_written_total",
                                        "strata_job_images_failed_total", "strata_job_running"};
    static const char *const types[] = {"gauge", "counter", "counter", "gauge"};
    static const char *const helps[] = {
        "Images the job asks for.", "Images of the job written (PNG on disk).",
        "Images of the job that failed.", "1 while the job runs, 0 once it ended."};
    for (int f = 0; f < 4; f++) {
        family(t, names[f], types[f], helps[f]);
        for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++) {
            const coord_job *j = coord_jobs_at(c->jobs, i);
            uint64_t v[4] = {j->count, j->done, j->failed, j->state == COORD_JOB_RUNNING};
            sample(t, names[f], NULL, j->id, v[f]);
        }
    }
    family(t, "strata_jobs", "gauge", "Jobs the coordinator knows, by state.");
    for (int s = COORD_JOB_RUNNING; s <= COORD_JOB_FAILED; s++) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++)
            n += coord_jobs_at(c->jobs, i)->state == (coord_job_state)s;
        coord_text_printf(t, "strata_jobs{state=\"%s\"} %" PRIu64 "\n",
                          coord_job_state_name((coord_job_state)s), n);
    }
}

/* The task time histogram of each level, over every job ever run (retired ones included). */
static void task_seconds(coord_t *c, coord_text *t)
{
    family(t, "strata_task_seconds", "histogram",
           "Time workers reported for each task done, by level (seconds).");
    const coord_level_count *ret = coord_jobs_retired(c->jobs);
    for (int l = 0; l < c->pipe.nlevels; l++) {
        coord_level_count sum = ret[l];
        for (uint32_t i = 0; i < coord_jobs_count(c->jobs); i++) {
            const coord_level_count *lv = &coord_jobs_at(c->jobs, i)->lv[l];
            sum.compute_ms += lv->compute_ms;
            sum.done += lv->done;
            for (int b = 0; b < COORD_TASK_BUCKETS; b++)
                sum.hist[b] += lv->hist[b];
        }
        uint64_t cum = 0;
        for (int b = 0; b < COORD_TASK_BUCKETS; b++) {
            cum += sum.hist[b];
            coord_text_put(t, "strata_task_seconds_bucket{level=\"");
            coord_text_label(t, c->pipe.levels[l].name);
            if (b < COORD_TASK_BUCKETS - 1)
                coord_text_printf(t, "\",le=\"%g\"} %" PRIu64 "\n",
                                  coord_task_bucket_ms[b] / 1000.0, cum);
            else
                coord_text_printf(t, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
        }
        coord_text_put(t, "strata_task_seconds_sum{level=\"");
        coord_text_label(t, c->pipe.levels[l].name);
        coord_text_printf(t, "\"} %.3f\n", (double)sum.compute_ms / 1000.0);
        sample(t, "strata_task_seconds_count", c->pipe.levels[l].name, NULL, cum);
    }
}

/* Workers, their ranks, credits and tasks, per level. */
static void workers(coord_t *c, coord_text *t)
{
    static const char *const names[] = {"strata_workers", "strata_worker_ranks",
                                        "strata_worker_credits", "strata_worker_tasks"};
    static const char *const helps[] = {
        "Workers registered (a rank group counts once).",
        "MPI ranks of the level's workers together (a single process counts 1).",
        "Tasks the level's workers would take now.", "Tasks leased to the level's workers."};
    for (int f = 0; f < 4; f++) {
        family(t, names[f], "gauge", helps[f]);
        for (int l = 0; l < c->pipe.nlevels; l++) {
            uint64_t v = 0;
            for (uint32_t i = 0; i < coord_registry_size(c->workers); i++) {
                const coord_worker *w = coord_registry_at(c->workers, i);
                if (w->level != l) continue;
                uint64_t per[4] = {1, w->ranks ? w->ranks : 1, w->credits, w->running};
                v += per[f];
            }
            sample(t, names[f], c->pipe.levels[l].name, NULL, v);
        }
    }
}

/* The state directory and the outputs. */
static void disk(coord_t *c, coord_text *t)
{
    int state = c->journal != NULL;
    family(t, "strata_state_enabled", "gauge", "1 when the coordinator keeps a state directory.");
    sample(t, "strata_state_enabled", NULL, NULL, (uint64_t)state);
    family(t, "strata_state_ok", "gauge",
           "1 when the state directory takes new jobs (0: a full disk or a failed write).");
    sample(t, "strata_state_ok", NULL, NULL,
           (uint64_t)(!state || (!*c->state_error && !c->spool_full)));
    family(t, "strata_journal_bytes", "gauge", "Bytes in the journal file (synced records).");
    sample(t, "strata_journal_bytes", NULL, NULL, state ? coord_journal_size(c->journal) : 0);
    family(t, "strata_journal_records_pending", "gauge",
           "1 while journal records wait for their group commit.");
    sample(t, "strata_journal_records_pending", NULL, NULL,
           (uint64_t)(state && coord_journal_dirty(c->journal)));
    family(t, "strata_journal_compactions_total", "counter", "Journal compactions since start.");
    sample(t, "strata_journal_compactions_total", NULL, NULL, c->compactions);
    family(t, "strata_output_write_errors_total", "counter", "PNG writes that failed.");
    sample(t, "strata_output_write_errors_total", NULL, NULL, c->write_errors);
    family(t, "strata_output_writes_pending", "gauge", "PNGs with the writer threads.");
    sample(t, "strata_output_writes_pending", NULL, NULL, c->writes);
    family(t, "strata_output_writes_held", "gauge",
           "PNGs held in memory: their disk cannot take them now (their jobs are stalled).");
    sample(t, "strata_output_writes_held", NULL, NULL, coord_writer_held(c->writer, NULL, NULL));
}

void coord_metrics_text(coord_t *c, coord_text *t)
{
    job_levels(c, t);
    jobs(c, t);
    task_seconds(c, t);
    workers(c, t);
    disk(c, t);
}
