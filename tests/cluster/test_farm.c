/* The farm end to end, with real processes over loopback ZeroMQ: a coordinator, pools of
 * workers per level, jobs submitted by `strata submit`, and `strata render`. The same job must
 * give the same bytes whatever the pool sizes, and survive a worker killed mid-task. */
#include "cluster/client.h"
#include "kernels/kernels.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TINY_PIPELINE "configs/pipelines/test-tiny.yaml"
enum { FARM_IMAGES = 40, FARM_MAX_PROCS = 16 };

/* The pipeline farm_start serves and write_job names. */
static const char *farm_pipeline = TINY_PIPELINE;

typedef struct farm {
    pid_t coord;
    pid_t workers[FARM_MAX_PROCS];
    int nworkers;
    char worker_ep[256], client_ep[256];
    char log[1024]; /* the coordinator's stderr */
} farm;

/* "strata coordinator: workers=EP clients=EP" on the coordinator's stdout. */
static int read_ready(int fd, farm *f)
{
    char line[1024];
    if (test_read_line(fd, line, sizeof line, 20000)) return -1;
    return sscanf(line, "strata coordinator: workers=%255s clients=%255s", f->worker_ep,
                  f->client_ep) == 2
               ? 0
               : -1;
}

static int farm_start(farm *f, const char *dir, int pool16, int pool32)
{
    int fds[2];
    memset(f, 0, sizeof *f);
    snprintf(f->log, sizeof f->log, "%s/coordinator.log", dir);
    unlink(f->log); /* this farm's log alone (test_spawn appends) */
    if (pipe(fds)) return -1;
    char *argv[] = {(char *)test_strata_bin(),
                    "coordinator",
                    "--pipeline",
                    (char *)farm_pipeline,
                    "--workers",
                    "tcp://127.0.0.1:*",
                    "--clients",
                    "tcp://127.0.0.1:*",
                    "--out-root",
                    (char *)dir,
                    "--verbose",
                    NULL};
    f->coord = test_spawn(argv, fds[1], f->log);
    close(fds[1]);
    int rc = read_ready(fds[0], f);
    close(fds[0]);
    for (int i = 0; !rc && i < pool16 + pool32; i++) {
        char *w[] = {(char *)test_strata_bin(),
                     "worker",
                     "--level",
                     i < pool16 ? "l16" : "l32",
                     "--connect",
                     f->worker_ep,
                     "--pipeline",
                     (char *)farm_pipeline,
                     NULL};
        f->workers[f->nworkers++] = test_spawn(w, -1, NULL);
    }
    return rc;
}

static void farm_stop(farm *f)
{
    if (f->coord > 0) {
        kill(f->coord, SIGTERM);
        waitpid(f->coord, NULL, 0);
    }
    /* workers leave on the coordinator's SHUTDOWN; SIGINT asks the same of any left */
    for (int i = 0; i < f->nworkers; i++)
        if (f->workers[i] > 0) kill(f->workers[i], SIGINT);
    for (int i = 0; i < f->nworkers; i++)
        waitpid(f->workers[i], NULL, 0);
}

static int write_job(const char *path, const char *out)
{
    FILE *j = fopen(path, "w");
    if (!j) return -1;
    fprintf(j, "pipeline: %s\nname: farm\ncount: %d\nseed: 1000\nresolution: 32\nout: %s\n",
            farm_pipeline, FARM_IMAGES, out);
    return fclose(j);
}

static int submit_wait(const farm *f, const char *job_path, char *err, size_t errlen)
{
    const char *args[] = {"submit", job_path, "--wait", "--coordinator", f->client_ep, NULL};
    return test_run_strata(args, err, errlen, NULL, 0);
}

/* 1 when DIR_A/farm/NAME and DIR_B/farm/NAME have the same bytes. */
static int same_file(const char *a, const char *b, const char *name)
{
    char pa[1200], pb[1200];
    char *da = NULL, *db = NULL;
    snprintf(pa, sizeof pa, "%s/farm/%s", a, name);
    snprintf(pb, sizeof pb, "%s/farm/%s", b, name);
    long na = test_file_read(pa, &da), nb = test_file_read(pb, &db);
    int same = na >= 0 && na == nb && memcmp(da, db, (size_t)na) == 0;
    free(da), free(db);
    return same;
}

/* Every image is a valid 32x32 PNG and the manifest has one "ok" line per image, in order. */
static int check_outputs(const char *dir, char *why, size_t len)
{
    for (int i = 0; i < FARM_IMAGES; i++) {
        char path[1200];
        uint8_t *rgb;
        int w, h;
        strata_err e;
        snprintf(path, sizeof path, "%s/farm/%06d.png", dir, i);
        if (png_read_rgb(path, &rgb, &w, &h, &e) || w != 32 || h != 32)
            return snprintf(why, len, "%s: not a 32x32 PNG (%s)", path, e.msg), -1;
        free(rgb);
    }
    char path[1200], line[1024];
    snprintf(path, sizeof path, "%s/farm/manifest.jsonl", dir);
    FILE *m = fopen(path, "r");
    if (!m) return snprintf(why, len, "%s: missing", path), -1;
    int n = 0;
    while (fgets(line, sizeof line, m)) {
        char want[64];
        snprintf(want, sizeof want, "\"index\":%d,", n);
        if (!strstr(line, want) || !strstr(line, "\"status\":\"ok\"")) break;
        n++;
    }
    fclose(m);
    if (n != FARM_IMAGES) return snprintf(why, len, "%s: line %d is wrong or missing", path, n), -1;
    return 0;
}

static int same_outputs(const char *a, const char *b, char *why, size_t len)
{
    char name[64];
    for (int i = 0; i < FARM_IMAGES; i++) {
        snprintf(name, sizeof name, "%06d.png", i);
        if (!same_file(a, b, name)) return snprintf(why, len, "%s differs", name), -1;
    }
    if (!same_file(a, b, "manifest.jsonl")) return snprintf(why, len, "manifest differs"), -1;
    return 0;
}

/* Runs the job on a farm with the given pools; out is DIR/out<pool16><pool32>. */
static int run_farm_job(const char *dir, int pool16, int pool32, char *out, size_t outlen,
                        char *why, size_t whylen)
{
    farm f;
    char job[1200], err[4096] = "";
    snprintf(out, outlen, "%s/out%d%d", dir, pool16, pool32);
    snprintf(job, sizeof job, "%s/job%d%d.yaml", dir, pool16, pool32);
    if (write_job(job, out) || farm_start(&f, dir, pool16, pool32)) {
        farm_stop(&f);
        return snprintf(why, whylen, "could not start the farm"), -1;
    }
    int rc = submit_wait(&f, job, err, sizeof err);
    farm_stop(&f);
    if (rc) return snprintf(why, whylen, "submit --wait exit %d: %s", rc, err), -1;
    return check_outputs(out, why, whylen);
}

TEST(farm_same_bytes_for_any_pool_size_and_render)
{
    farm_pipeline = TINY_PIPELINE;
    char dir[1024], a[1200], b[1200], c[1200], why[2048] = "", err[4096] = "";
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    CHECKF(run_farm_job(dir, 2, 1, a, sizeof a, why, sizeof why) == 0, "2+1 workers: %s", why);
    CHECKF(run_farm_job(dir, 1, 1, b, sizeof b, why, sizeof why) == 0, "1+1 workers: %s", why);
    CHECKF(same_outputs(a, b, why, sizeof why) == 0, "2+1 vs 1+1 workers: %s", why);
    snprintf(c, sizeof c, "%s/render", dir);
    char count[16];
    snprintf(count, sizeof count, "%d", FARM_IMAGES);
    const char *args[] = {"render", "--pipeline",   TINY_PIPELINE, "--count", count, "--seed",
                          "1000",   "--resolution", "32",          "--out",   c,     "--name",
                          "farm",   "--workers",    "l16=2,l32=2", NULL};
    int rc = test_run_strata(args, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);
    CHECKF(same_outputs(a, c, why, sizeof why) == 0, "farm vs render: %s", why);
}

/* STATUS until level l16 has two tasks running, i.e. both its workers are mid-task. */
static int wait_both_busy(const farm *f)
{
    client c;
    strata_err e;
    if (client_open(&c, f->client_ep, &e)) return -1;
    int busy = 0;
    /* by time, not by count: the workers load and hash their models before they register */
    for (long long end = clock_now_ms() + 60000; !busy && clock_now_ms() < end;) {
        proto_msg req = {.type = PROTO_STATUS, .status = {"farm"}}, reply;
        if (client_call(&c, &req, &reply, 5000, &e)) break;
        if (reply.type == PROTO_STATUS_REPLY && reply.status_reply.njobs == 1) {
            const struct proto_job_status *s = &reply.status_reply.jobs[0];
            busy = s->nlevels > 0 && s->levels[0].running == 2;
        }
        proto_msg_free(&reply);
    }
    client_close(&c);
    return busy ? 0 : -1;
}

TEST(farm_worker_killed_mid_task)
{
    char dir[1024], ref[1200], out[1200], job[1200], why[2048] = "", err[4096] = "";
    static char slow[1200];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(slow, sizeof slow, "%s/slow.yaml", dir);
    CHECK(test_write_slow_pipeline(slow, 40) == 0);
    farm_pipeline = slow;
    CHECKF(run_farm_job(dir, 1, 1, ref, sizeof ref, why, sizeof why) == 0, "reference: %s", why);
    snprintf(out, sizeof out, "%s/killed", dir);
    snprintf(job, sizeof job, "%s/killed.yaml", dir);
    farm f;
    CHECK(write_job(job, out) == 0);
    CHECK(farm_start(&f, dir, 2, 1) == 0);
    /* submit in the background, kill one l16 worker while both hold a task */
    pid_t submit = fork();
    if (submit == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        char *argv[] = {(char *)test_strata_bin(), "submit",    job, "--wait",
                        "--coordinator",           f.client_ep, NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    int busy = wait_both_busy(&f);
    if (!busy) kill(f.workers[0], SIGKILL);
    int status = -1;
    waitpid(submit, &status, 0);
    farm_stop(&f);
    farm_pipeline = TINY_PIPELINE;
    CHECKF(busy == 0, "%s", "never saw both l16 workers busy");
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "submit --wait status %d", status);
    CHECKF(check_outputs(out, why, sizeof why) == 0, "%s", why);
    char killed[1300];
    snprintf(killed, sizeof killed, "%s", out);
    /* same_outputs compares DIR/farm/...: both runs used the job name "farm" */
    CHECKF(same_outputs(ref, killed, why, sizeof why) == 0, "after the kill: %s", why);
    CHECKF(test_file_mentions(f.log, "re-queued"),
           "the coordinator log shows no re-queued task: %s", f.log);
    (void)err;
}

/* Submit job to f in the background (`strata submit --wait`, output to /dev/null): its pid. */
static pid_t submit_background(const farm *f, const char *job)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        char *argv[] = {(char *)test_strata_bin(), "submit", (char *)job, "--wait", "--coordinator",
                        (char *)f->client_ep,      NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* waitpid within ms (polled): the status, or -1 when pid is still running then. */
static int wait_exit(pid_t pid, int ms)
{
    int status = 0;
    for (long long end = clock_now_ms() + ms; clock_now_ms() < end;) {
        if (waitpid(pid, &status, WNOHANG) == pid) return status;
        struct timespec step = {0, 20 * 1000000};
        nanosleep(&step, NULL);
    }
    return -1;
}

/* What the coordinator's log says of worker name once it said it drains: "" when all is as it
 * should (its RESULT taken after, no TASK to it after, its BYE as a drained worker, nothing
 * re-queued), else what is wrong. */
static const char *drain_log_wrong(const char *log, const char *name)
{
    char *text;
    static char want[4][160];
    if (test_file_read(log, &text) < 0) return "no coordinator log";
    snprintf(want[0], sizeof want[0], "worker %s (l16) draining", name);
    snprintf(want[1], sizeof want[1], "done by worker %s in", name);
    snprintf(want[2], sizeof want[2], "-> worker %s\n", name);
    snprintf(want[3], sizeof want[3], "worker %s (l16) forgotten: said BYE after draining", name);
    const char *t = text, *drain = strstr(t, want[0]), *why = "";
    if (!drain)
        why = "no draining line";
    else if (!strstr(drain, want[1]))
        why = "no RESULT of its taken after it drained";
    else if (strstr(drain, want[2]))
        why = "a TASK went to it after it drained";
    else if (!strstr(drain, want[3]))
        why = "no BYE after draining";
    else if (strstr(t, "re-queued"))
        why = "a task was re-queued";
    free(text);
    return why;
}

/* SIGTERM to one of two l16 workers mid-task (issue "Operating a farm"): it finishes the task,
 * the coordinator takes its RESULT and sends it nothing more, it exits 0, and the job gives the
 * bytes of a clean run. l16 at 120 steps (~0.75 s a task): the signal sent once both hold
 * a task lands mid-task (at 40 steps a task could end between the status and the signal). */
TEST(farm_worker_drains_on_sigterm)
{
    char dir[1024], ref[1200], out[1200], job[1200], why[2048] = "", name[320], host[256];
    static char slow[1200];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(slow, sizeof slow, "%s/slow.yaml", dir);
    CHECK(test_write_slow_pipeline(slow, 120) == 0 && gethostname(host, sizeof host) == 0);
    farm_pipeline = slow;
    CHECKF(run_farm_job(dir, 2, 1, ref, sizeof ref, why, sizeof why) == 0, "reference: %s", why);
    snprintf(out, sizeof out, "%s/drained", dir);
    snprintf(job, sizeof job, "%s/drained.yaml", dir);
    farm f;
    CHECK(write_job(job, out) == 0);
    CHECK(farm_start(&f, dir, 2, 1) == 0);
    snprintf(name, sizeof name, "%s-%ld", host, (long)f.workers[0]); /* its default id */
    pid_t submit = submit_background(&f, job);
    int busy = wait_both_busy(&f), drained = -1, status = -1;
    if (!busy && kill(f.workers[0], SIGTERM) == 0) {
        /* a task of this level takes well under a second: 60 s is only a deadline */
        drained = wait_exit(f.workers[0], 60000);
        if (drained != -1) f.workers[0] = 0; /* reaped */
    }
    waitpid(submit, &status, 0);
    farm_stop(&f);
    farm_pipeline = TINY_PIPELINE;
    CHECKF(busy == 0, "%s", "never saw both l16 workers busy");
    CHECKF(drained != -1 && WIFEXITED(drained) && WEXITSTATUS(drained) == 0,
           "the drained worker: status %d", drained);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "submit --wait status %d", status);
    CHECKF(check_outputs(out, why, sizeof why) == 0, "%s", why);
    CHECKF(same_outputs(ref, out, why, sizeof why) == 0, "after the drain: %s", why);
    const char *wrong = drain_log_wrong(f.log, name);
    CHECKF(!*wrong, "%s: %s", f.log, wrong);
}

/* The README's main job: `strata render` on the shipped cascade, its defaults but fewer images. */
TEST(farm_render_default_cascade)
{
    char out[1024], err[4096] = "", path[1200];
    snprintf(out, sizeof out, "%s/default", test_tmpdir());
    const char *args[] = {"render", "--count", "2", "--out", out, NULL};
    int rc = test_run_strata(args, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);
    for (int i = 0; i < 2; i++) {
        uint8_t *rgb;
        int w, h;
        strata_err e;
        snprintf(path, sizeof path, "%s/render/%06d.png", out, i);
        CHECKF(png_read_rgb(path, &rgb, &w, &h, &e) == 0, "%s", e.msg);
        free(rgb);
        CHECKF(w == 128 && h == 128, "%s is %dx%d, the default resolution is 128", path, w, h);
    }
}

/* Intervening at a level: a job that keeps its levels, then a job that starts at l32 from the
 * kept l16 images, gives the same l32 pixels as the full run. */
TEST(farm_start_level_from_kept_images)
{
    char dir[1024], full[1200], part[1200], err[4096] = "";
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(full, sizeof full, "%s/full", dir);
    snprintf(part, sizeof part, "%s/part", dir);
    char grid[1300];
    snprintf(grid, sizeof grid, "%s/grid.png", dir);
    const char *a[] = {"render", "--pipeline",   TINY_PIPELINE, "--count", "3",  "--seed",
                       "5",      "--resolution", "32",          "--out",   full, "--keep-levels",
                       "--grid", grid,           NULL};
    int rc = test_run_strata(a, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "full run: exit %d: %s", rc, err);
    uint8_t *g;
    int gw, gh;
    strata_err ge;
    CHECKF(png_read_rgb(grid, &g, &gw, &gh, &ge) == 0, "%s", ge.msg);
    free(g);
    CHECKF(gw == 2 * 32 && gh == 3 * 32, "grid %dx%d: want 2 levels x 3 images of 32", gw, gh);
    char init[1300];
    snprintf(init, sizeof init, "%s/render", full);
    const char *b[] = {"render", "--pipeline",   TINY_PIPELINE, "--count", "3",  "--seed",
                       "5",      "--resolution", "32",          "--out",   part, "--start-level",
                       "l32",    "--init",       init,          NULL};
    rc = test_run_strata(b, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "start at l32: exit %d: %s", rc, err);
    for (int i = 0; i < 3; i++) {
        char pa[1400], pb[1400];
        uint8_t *x, *y;
        int w1, h1, w2, h2;
        strata_err e;
        snprintf(pa, sizeof pa, "%s/render/%06d.png", full, i);
        snprintf(pb, sizeof pb, "%s/render/%06d.png", part, i);
        CHECKF(png_read_rgb(pa, &x, &w1, &h1, &e) == 0, "%s", e.msg);
        CHECKF(png_read_rgb(pb, &y, &w2, &h2, &e) == 0, "%s", e.msg);
        int same = w1 == w2 && h1 == h2 && memcmp(x, y, (size_t)w1 * h1 * 3) == 0;
        free(x), free(y);
        CHECKF(same, "image %d: the l32 pixels differ from the full run's", i);
    }
}

/* A job written for another pipeline is refused at SUBMIT, naming both. */
TEST(farm_submit_refuses_another_pipeline)
{
    farm_pipeline = TINY_PIPELINE;
    char dir[1024], job[1200], err[4096] = "";
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(job, sizeof job, "%s/other.yaml", dir);
    FILE *f = fopen(job, "w");
    CHECK(f);
    fprintf(f, "pipeline: configs/pipelines/emoji.yaml\ncount: 1\nresolution: 32\nout: %s\n", dir);
    fclose(f);
    farm fm;
    CHECK(farm_start(&fm, dir, 0, 0) == 0);
    int rc = submit_wait(&fm, job, err, sizeof err);
    farm_stop(&fm);
    CHECKF(rc == 2, "exit %d: %s", rc, err);
    CHECKF(strstr(err, "emoji.yaml") && strstr(err, "test-tiny.yaml"), "%s", err);
}

/* Appends what fd has to text, keeping the last part when it overflows: 1 when it read some,
 * 0 at EOF, -1 after timeout_ms of silence. */
static int read_tail(int fd, char *text, size_t size, size_t *used, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    if (*used + 1024 > size) {
        memmove(text, text + *used - size / 2, size / 2);
        *used = size / 2;
    }
    ssize_t n = read(fd, text + *used, size - 1 - *used);
    if (n <= 0) return 0;
    *used += (size_t)n;
    text[*used] = 0;
    return 1;
}

/* SIGTERM ends `strata render` as it says: it stops its farm (every coordinator and worker it
 * started closes the stderr they share, so the pipe reaches EOF), says why, and exits 1. */
TEST(farm_render_stops_on_sigterm)
{
    char dir[1024], slow[1200], out[1200], text[16384] = "";
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(slow, sizeof slow, "%s/slow.yaml", dir);
    snprintf(out, sizeof out, "%s/stopped", dir);
    CHECK(test_write_slow_pipeline(slow, 40) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    char *argv[] = {(char *)test_strata_bin(),
                    "render",
                    "--pipeline",
                    slow,
                    "--count",
                    "40",
                    "--out",
                    out,
                    NULL};
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]), close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    /* the first progress line: the farm is up and the job is running */
    while (!strstr(text, "running") && read_tail(fds[0], text, sizeof text, &used, 60000) > 0)
        continue;
    int started = strstr(text, "running") != NULL, rc;
    kill(pid, SIGTERM);
    while ((rc = read_tail(fds[0], text, sizeof text, &used, 60000)) > 0)
        continue;
    close(fds[0]);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECKF(started, "no progress line from render: %s", text);
    CHECKF(rc == 0, "%s", "a process render started still holds its stderr after 60 s");
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 1, "render status %d: %s", status, text);
    CHECKF(strstr(text, "stopped by signal 15") && !strstr(text, "Interrupted"), "%s", text);
}
