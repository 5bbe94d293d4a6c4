/* A job's own sampling through the coordinator: its steps per level and direct last level reach
 * the TASKs (params), its budget and choice are recorded in the manifest and the PNGs, the
 * workers' times go to timings.jsonl, and a SUBMIT whose choice does not fit is refused. */
#include "cluster/config.h"
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int refused(void *cl, const char *spec, const char *needle)
{
    char msg[600];
    return harness_submit(cl, spec, msg, sizeof msg) < 0 && strstr(msg, needle) ? 0 : -1;
}

/* The next TASK on w: its params.steps and params.direct, answered ok at side. 0 or -1. */
static int answer_task(fake_worker *w, int level, int side, uint32_t *steps, int *direct)
{
    proto_msg m;
    if (harness_recv(w->sock, &m, 5000) || m.type != PROTO_TASK) return -1;
    *steps = m.task.params.steps;
    *direct = m.task.params.direct;
    int rc = harness_result(w->sock, m.task.task, m.task.attempt, 1, m.task.image, level, side);
    proto_msg_free(&m);
    return rc;
}

static void body_sampling(harness *h, int *test_failed_)
{
    char spec[1400], id[256], path[1200];
    void *cl = harness_dealer(h, 0, "client");
    snprintf(spec, sizeof spec, "pipeline: p.yaml\nresolution: 32\nout: %s\nbudget_s: 2\n", h->dir);
    CHECK(refused(cl, spec, "budget_s: give the steps (and direct) chosen for it") == 0);
    snprintf(spec, sizeof spec, "pipeline: p.yaml\nresolution: 32\nout: %s\nsteps: {l64: 2}\n",
             h->dir);
    CHECK(refused(cl, spec, "steps: 'l64' is not a level this job runs") == 0);
    snprintf(spec, sizeof spec, "pipeline: p.yaml\nresolution: 16\nout: %s\ndirect: true\n",
             h->dir);
    CHECK(refused(cl, spec, "direct: the job's last level l16 is not a refine level") == 0);

    fake_worker w0, w1;
    CHECK(harness_worker(h, &w0, "w0", 0, 1) == 0 && harness_worker(h, &w1, "w1", 1, 1) == 0);
    snprintf(spec, sizeof spec,
             "pipeline: p.yaml\nname: pl\nresolution: 32\nout: %s\nsteps: {l16: 7, l32: 5}\n"
             "direct: true\nbudget_s: 2.5\npredicted_s: 1.25\n",
             h->dir);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "pl") == 0);
    uint32_t steps = 0;
    int direct = -1;
    CHECK(answer_task(&w0, 0, 16, &steps, &direct) == 0);
    CHECKF(steps == 7 && !direct, "l16: steps %u direct %d", steps, direct);
    CHECK(answer_task(&w1, 1, 32, &steps, &direct) == 0);
    CHECKF(direct, "l32: steps %u direct %d", steps, direct);
    proto_msg m;
    CHECK(harness_recv_type(cl, PROTO_DONE, &m, 10000) == 0);
    proto_msg_free(&m);

    snprintf(path, sizeof path, "%s/pl/manifest.jsonl", h->dir);
    char *man = harness_read_file(path, NULL);
    int ok =
        man && strstr(man, "\"plan\":{\"budget_s\":2.5,\"direct\":\"l32\",\"predicted_s\":1.25,"
                           "\"steps\":{\"l16\":7,\"l32\":1}}");
    CHECKF(ok, "%s", man ? man : "(no manifest)");
    free(man);
    snprintf(path, sizeof path, "%s/pl/000000.png", h->dir);
    CHECK(harness_png_has_text(path, "strata:plan",
                               "budget_s=2.5 predicted_s=1.25 steps=l16:7,l32:1 direct=l32"));
    snprintf(path, sizeof path, "%s/pl/timings.jsonl", h->dir);
    char *t = harness_read_file(path, NULL);
    ok = t && !strncmp(t, "{\"index\":0,\"levels\":{\"l16\":{\"cpu_s\":", 34) &&
         strstr(t, "\"l32\":");
    CHECKF(ok, "%s", t ? t : "(no timings.jsonl)");
    free(t);
}

TEST(coord_job_sampling_reaches_tasks_and_outputs)
{
    harness h;
    coord_options o = {.parse_job = job_spec_from_yaml_text};
    CHECK(harness_start(&h, &o) == 0);
    body_sampling(&h, test_failed_);
    CHECK(harness_stop(&h) == 0);
}
