/* The compute each image cost at each level, as its workers reported it with RESULT (CPU
 * seconds, cpu_us, and wall seconds, elapsed_ms), written at the job's end as
 * OUT/<job>/timings.jsonl beside the manifest. Kept apart from the manifest because timings
 * differ from run to run while the manifest's bytes must not (docs/design.md section 2). */
#include "coordinator/outputs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* Images of a job whose times are kept: 8 bytes per image and level, so at most 64 MiB for a
 * job of 8 levels; a larger job's timings.jsonl covers its first images only. */
enum { COORD_TIMINGS_MAX_IMAGES = 1 << 20 };

static uint32_t timed_images(const coord_job *j)
{
    return j->count < COORD_TIMINGS_MAX_IMAGES ? j->count : COORD_TIMINGS_MAX_IMAGES;
}

/* Two floats (CPU s, wall s) per image and planned level; -1: no RESULT recorded (an image
 * failed, or it finished before a coordinator restart). */
static float *timing_at(coord_job *j, uint32_t image, int level)
{
    int nl = j->end - j->first;
    if (!j->timings) {
        size_t n = (size_t)timed_images(j) * (size_t)nl * 2;
        if (!(j->timings = malloc(n * sizeof *j->timings))) return NULL;
        for (size_t i = 0; i < n; i++)
            j->timings[i] = -1.0f;
    }
    return j->timings + ((size_t)image * (size_t)nl + (size_t)(level - j->first)) * 2;
}

void coord_job_task_timed(coord_job *j, int level, uint32_t image, uint64_t elapsed_ms,
                          uint64_t cpu_us)
{
    if (image >= timed_images(j) || level < j->first || level >= j->end) return;
    float *t = timing_at(j, image, level);
    if (!t) return; /* out of memory: the timings are lost, not the image */
    /* a worker that sends no cpu_us (an older one) is counted at its wall time */
    t[0] = cpu_us ? (float)((double)cpu_us * 1e-6) : (float)((double)elapsed_ms * 1e-3);
    t[1] = (float)((double)elapsed_ms * 1e-3);
}

/* One line: {"index":i,"levels":{"l32":{"cpu_s":..,"wall_s":..},..}}, levels with a time. */
static int timings_line(const pipeline_spec *p, coord_job *j, uint32_t i, FILE *f)
{
    json_t *obj = json_object(), *levels = json_object();
    json_object_set_new(obj, "index", json_integer(i));
    for (int l = j->first; l < j->end; l++) {
        const float *t = timing_at(j, i, l);
        if (t[0] < 0) continue;
        json_t *lv = json_object();
        json_object_set_new(lv, "cpu_s", json_real(t[0]));
        json_object_set_new(lv, "wall_s", json_real(t[1]));
        json_object_set_new(levels, p->levels[l].name, lv);
    }
    json_object_set_new(obj, "levels", levels);
    char *line = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6));
    int rc = line && fputs(line, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
    free(line);
    json_decref(obj);
    return rc;
}

int coord_write_timings(const pipeline_spec *p, coord_job *j, strata_err *e)
{
    char path[sizeof j->dir + 32];
    snprintf(path, sizeof path, "%s/timings.jsonl", j->dir);
    if (!j->timings) return 0; /* nothing ran here (all restored, or every image failed) */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc = f ? 0 : -1;
    for (uint32_t i = 0; i < timed_images(j) && rc == 0; i++)
        rc = timings_line(p, j, i, f);
    if (f && fclose(f) != 0) rc = -1;
    if (rc < 0)
        rc = err_set(e, ERR_NOMEM, "%s: cannot build the timings", path);
    else
        rc = file_write_atomic(path, &(struct iovec){text, len}, 1, 0, e);
    free(text);
    return rc;
}
