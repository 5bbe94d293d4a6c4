/* What the coordinator writes and reads on disk: the requests for output PNGs (with strata:*
 * text chunks; writer.c's threads write them), start_level init images, job directories and
 * the manifest. The manifest holds only what the job
 * determines (no timings, worker names or attempt counts): it is byte-identical for the same job
 * on any farm (docs/design.md section 2). */
#include "coordinator/outputs.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int coord_mkdirs(const char *path, strata_err *e)
{
    char buf[SPEC_PATH_MAX * 2];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return err_set(e, ERR_INPUT, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char was = *p;
        *p = 0;
        struct stat st;
        if (mkdir(buf, 0777) < 0 && (errno != EEXIST || stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)))
            return err_set(e, ERR_IO, "%s: cannot create directory: %s", buf,
                           errno == EEXIST ? "a file is in the way" : strerror(errno));
        *p = was;
        if (!was) return 0;
    }
}

/* The names of levels first..last, comma-joined. */
static void levels_csv(const pipeline_spec *p, int first, int last, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = 0;
    for (int l = first; l <= last && o < len; l++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", l > first ? "," : "", p->levels[l].name);
}

/* Whether j chose its own sampling (a budget, steps or a direct last level). */
static int has_plan(const coord_job *j)
{
    return j->spec.budget_s > 0 || j->spec.nsteps > 0 || j->spec.direct;
}

/* The steps level l runs for j: 1 for a direct last level, the job's, else the pipeline's. */
static int plan_steps(const pipeline_spec *p, const coord_job *j, int l)
{
    if (j->spec.direct && l == j->end - 1) return 1;
    return j->steps[l] > 0 ? j->steps[l] : p->levels[l].steps;
}

/* strata:plan: "budget_s=B predicted_s=P steps=l32:10,l128:8 direct=l128" (direct=none). */
static void plan_text(const pipeline_spec *p, const coord_job *j, char *buf, size_t len)
{
    buf[0] = 0;
    if (!has_plan(j)) return;
    size_t o = (size_t)snprintf(buf, len, "budget_s=%g predicted_s=%g steps=", j->spec.budget_s,
                                j->spec.predicted_s);
    for (int l = j->first; l < j->end && o < len; l++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s:%d", l > j->first ? "," : "",
                              p->levels[l].name, plan_steps(p, j, l));
    if (o < len)
        snprintf(buf + o, len - o, " direct=%s",
                 j->spec.direct ? p->levels[j->end - 1].name : "none");
}

coord_write *coord_png_request(const pipeline_spec *p, const coord_slot *sl, uint32_t s, int final,
                               const uint8_t *rgb, int side)
{
    const coord_job *j = sl->job;
    coord_write *w = calloc(1, sizeof *w);
    size_t n = (size_t)side * side * 3;
    if (w) w->rgb = malloc(n);
    if (!w || !w->rgb) {
        coord_write_free(w);
        return NULL;
    }
    memcpy(w->rgb, rgb, n);
    w->side = side;
    w->job = sl->job;
    w->final = final;
    w->task = sl->task;
    w->slot = s;
    if (final)
        snprintf(w->path, sizeof w->path, "%s/%06u.png", j->dir, sl->image);
    else
        snprintf(w->path, sizeof w->path, "%s/%06u.%s.png", j->dir, sl->image,
                 p->levels[sl->level].name);
    snprintf(w->job_id, sizeof w->job_id, "%s", j->id);
    snprintf(w->index, sizeof w->index, "%u", sl->image);
    snprintf(w->seed, sizeof w->seed, "%llu", (unsigned long long)coord_job_seed(j, sl->image));
    levels_csv(p, j->first, sl->level, w->levels, sizeof w->levels);
    snprintf(w->pipeline, sizeof w->pipeline, "%s", p->name);
    plan_text(p, j, w->plan, sizeof w->plan);
    return w;
}

int coord_read_init(const pipeline_spec *p, const coord_job *j, uint32_t image, uint8_t **rgb,
                    int *side, strata_err *e)
{
    char path[SPEC_PATH_MAX + 64];
    const char *prev = p->levels[j->first - 1].name;
    int want = p->levels[j->first - 1].side, w = 0, h = 0, rc;
    strata_err png = {0};
    *rgb = NULL;
    /* <index>.<previous level>.png first: what --keep-levels wrote, so a picked coarse image
     * from an earlier run works as it is; else <index>.png */
    snprintf(path, sizeof path, "%s/%06u.%s.png", j->spec.init_images, image, prev);
    if (access(path, R_OK) != 0)
        snprintf(path, sizeof path, "%s/%06u.png", j->spec.init_images, image);
    if ((rc = png_read_rgb(path, rgb, &w, &h, &png)) < 0)
        return err_set(e, rc, "init image: %s", png.msg);
    if (w != want || h != want) {
        free(*rgb);
        *rgb = NULL;
        return err_set(e, ERR_INPUT, "init image %s: %dx%d, expected %dx%d (the %s output)", path,
                       w, h, want, want, prev);
    }
    *side = want;
    return 0;
}

static int by_image(const void *a, const void *b)
{
    uint32_t x = ((const coord_failure *)a)->image, y = ((const coord_failure *)b)->image;
    return (x > y) - (x < y);
}

/* One manifest line for image i into f; fail (or NULL) is its failure. */
static int manifest_line(const coord_job *j, json_t *obj, uint32_t i, const coord_failure *fail,
                         FILE *f)
{
    char file[32];
    snprintf(file, sizeof file, "%06u.png", i);
    json_object_set_new(obj, "index", json_integer(i));
    json_object_set_new(obj, "file", json_string(file));
    json_object_set_new(obj, "seed", json_integer((json_int_t)coord_job_seed(j, i)));
    json_object_set_new(obj, "status", json_string(fail ? "failed" : "ok"));
    if (fail)
        json_object_set_new(obj, "error", json_string(j->reasons[fail->reason]));
    else
        json_object_del(obj, "error");
    char *line = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(6));
    int rc = line && fputs(line, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
    free(line);
    return rc;
}

/* The "plan" of every manifest line of a job that chose its sampling: budget_s, predicted_s
 * (CPU seconds per image), steps per level and the direct level (null: none). */
static json_t *manifest_plan(const pipeline_spec *p, const coord_job *j)
{
    json_t *plan = json_object(), *steps = json_object();
    json_object_set_new(plan, "budget_s", json_real(j->spec.budget_s));
    json_object_set_new(plan, "predicted_s", json_real(j->spec.predicted_s));
    for (int l = j->first; l < j->end; l++)
        json_object_set_new(steps, p->levels[l].name, json_integer(plan_steps(p, j, l)));
    json_object_set_new(plan, "steps", steps);
    json_object_set_new(plan, "direct",
                        j->spec.direct ? json_string(p->levels[j->end - 1].name) : json_null());
    return plan;
}

/* Write every line of j's manifest into f, sorted by index. */
static int manifest_lines(const pipeline_spec *p, coord_job *j, FILE *f)
{
    json_t *obj = json_object(), *levels = json_array();
    int rc = obj && levels ? 0 : -1;
    for (int l = j->first; l < j->end && rc == 0; l++)
        rc = json_array_append_new(levels, json_string(p->levels[l].name));
    if (rc == 0) rc = json_object_set(obj, "levels", levels);
    if (rc == 0 && has_plan(j)) rc = json_object_set_new(obj, "plan", manifest_plan(p, j));
    if (j->nfails) qsort(j->fails, j->nfails, sizeof *j->fails, by_image);
    uint32_t k = 0;
    for (uint32_t i = 0; i < j->count && rc == 0; i++) {
        const coord_failure *fail = k < j->nfails && j->fails[k].image == i ? &j->fails[k++] : NULL;
        rc = manifest_line(j, obj, i, fail, f);
    }
    json_decref(levels);
    json_decref(obj);
    return rc;
}

/* Make every file written into dir durable: syncfs flushes the images written without fsync
 * in one call, then the directory's own entries. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        fsync(fd);
        close(fd);
    }
}

int coord_write_manifest(const pipeline_spec *p, coord_job *j, strata_err *e)
{
    char path[sizeof j->dir + 32];
    snprintf(path, sizeof path, "%s/manifest.jsonl", j->dir);
    sync_dir(j->dir); /* the images first: the manifest records them as written */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc = f ? manifest_lines(p, j, f) : -1;
    if (f && fclose(f) != 0) rc = -1;
    if (rc < 0)
        rc = err_set(e, ERR_NOMEM, "%s: cannot build the manifest", path);
    else
        rc = file_write_atomic(path, &(struct iovec){text, len}, 1, 1, e);
    int err = errno;
    free(text);
    errno = err; /* the caller tells a full disk from other errors by it */
    return rc;
}
