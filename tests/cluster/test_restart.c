/* A coordinator with a state directory lives through its own death, with real processes over
 * loopback: SIGKILLed mid-job and restarted on the same --state (its journal's tail torn on
 * top, compacted every 4 KiB while serving), the job completes with every PNG byte-identical to a
 * clean render, the manifest lists each image once and images already written are not redone;
 * `strata render` stopped mid-job resumes when run again with the same arguments, refuses other
 * arguments naming the difference, and --fresh starts over; a state directory that fills up refuses
 * new jobs and loses none it accepted; a job whose output disk is full waits (and its client with
 * it, showing why) until space is back. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { IMAGES = 40 };

/* The coordinator on pipe with --state, on endpoints wep and cep ("tcp://127.0.0.1:*" the
 * first time); the endpoints it bound come back in them. Its pid, or -1. */
static pid_t coord_start(const char *pipe_path, const char *state, char *wep, char *cep,
                         const char *log)
{
    int fds[2];
    if (pipe(fds)) return -1;
    /* the jobs write under the test's own directory: no output root to keep them in */
    char *argv[] = {(char *)test_strata_bin(),
                    "coordinator",
                    "--pipeline",
                    (char *)pipe_path,
                    "--workers",
                    wep,
                    "--clients",
                    cep,
                    "--state",
                    (char *)state,
                    "--out-root",
                    "/",
                    "--verbose", /* the compaction is reported at stop with --verbose only */
                    NULL};
    pid_t pid = test_spawn(argv, fds[1], log);
    close(fds[1]);
    char line[1024];
    int ok = !test_read_line(fds[0], line, sizeof line, 30000) &&
             sscanf(line, "strata coordinator: workers=%255s clients=%255s", wep, cep) == 2;
    close(fds[0]);
    return ok ? pid : -1;
}

static void write_job(const char *path, const char *pipe_path, const char *out)
{
    FILE *j = fopen(path, "w");
    if (!j) return;
    fprintf(j, "pipeline: %s\nname: farm\ncount: %d\nseed: 1000\nresolution: 32\nout: %s\n",
            pipe_path, IMAGES, out);
    fclose(j);
}

/* How many of DIR/000000.png ... exist; their inodes into ino (0: missing). */
static int pngs(const char *dir, ino_t *ino, int n)
{
    int found = 0;
    for (int i = 0; i < n; i++) {
        char path[1200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%06d.png", dir, i);
        ino[i] = stat(path, &st) == 0 ? st.st_ino : 0;
        found += ino[i] != 0;
    }
    return found;
}

/* Wait until at least want PNGs exist in dir (polled: the condition, not a time). */
static int wait_pngs(const char *dir, int want)
{
    ino_t ino[IMAGES];
    struct timespec step = {0, 20 * 1000 * 1000};
    for (long long end = test_deadline_ms() - 60000; clock_now_ms() < end;) {
        if (pngs(dir, ino, IMAGES) >= want) return 0;
        nanosleep(&step, NULL);
    }
    return -1;
}

/* Every PNG and the manifest of a/ and b/ have the same bytes; the manifest has n lines, one
 * "ok" per index in order. */
static int same_outputs(const char *a, const char *b, int n, char *why, size_t len)
{
    for (int i = 0; i <= n; i++) {
        char pa[1200], pb[1200], *da = NULL, *db = NULL;
        char name[64];
        snprintf(name, sizeof name, i < n ? "%06d.png" : "manifest.jsonl", i);
        snprintf(pa, sizeof pa, "%s/%s", a, name);
        snprintf(pb, sizeof pb, "%s/%s", b, name);
        long na = test_file_read(pa, &da), nb = test_file_read(pb, &db);
        int same = na >= 0 && na == nb && !memcmp(da, db, (size_t)na);
        int lines = 0;
        for (long k = 0; i == n && same && k < na; k++)
            lines += da[k] == '\n';
        free(da), free(db);
        if (!same) return snprintf(why, len, "%s differs from %s", pb, pa), -1;
        if (i == n && lines != n) return snprintf(why, len, "%s: %d lines", pb, lines), -1;
    }
    return 0;
}

/* The last bytes of the file at path (for a failure's message), static. */
static const char *tail_of(const char *path)
{
    static char buf[2048];
    char *text;
    long n = test_file_read(path, &text);
    buf[0] = 0;
    if (n < 0) return buf;
    snprintf(buf, sizeof buf, "%s", text + (n > 2000 ? n - 2000 : 0));
    free(text);
    return buf;
}

static int render_ref(const char *pipe_path, const char *out, int count)
{
    char n[16];
    snprintf(n, sizeof n, "%d", count);
    const char *args[] = {"render", "--pipeline",   pipe_path,     "--count", n,      "--seed",
                          "1000",   "--resolution", "32",          "--name",  "farm", "--out",
                          out,      "--workers",    "l16=2,l32=1", NULL};
    char err[4096] = "";
    return test_run_strata(args, err, sizeof err, NULL, 0);
}

/* Workers of l16 (2) and l32 (1) of pipeline pipe_path on ep; their pids into w. */
static void workers_start(const char *pipe_path, const char *ep, pid_t *w)
{
    for (int i = 0; i < 3; i++) {
        char *argv[] = {(char *)test_strata_bin(),
                        "worker",
                        "--level",
                        i < 2 ? "l16" : "l32",
                        "--connect",
                        (char *)ep,
                        "--pipeline",
                        (char *)pipe_path,
                        NULL};
        w[i] = test_spawn(argv, -1, "/dev/null");
    }
}

static void stop(pid_t pid, int sig)
{
    if (pid <= 0) return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

/* Six bytes of a record header and no payload after the last record: a torn write. */
static int tear_journal(const char *state)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/journal", state);
    FILE *f = fopen(path, "ab");
    if (!f) return -1;
    fwrite("\x40\x00\x00\x00\x12\x34", 1, 6, f);
    return fclose(f);
}

TEST_TIMEOUT(farm_coordinator_killed_resumes_from_state, 300)
{
    char dir[1024], pipe_path[1200], ref[1200], out[1200], job[1200], state[1200], log[1200];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(pipe_path, sizeof pipe_path, "%s/slow.yaml", dir);
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(job, sizeof job, "%s/job.yaml", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(log, sizeof log, "%s/coordinator.log", dir);
    CHECK(test_write_slow_pipeline(pipe_path, 40) == 0);
    CHECKF(render_ref(pipe_path, ref, IMAGES) == 0, "%s", "the clean render failed");
    write_job(job, pipe_path, out);
    /* compact every few KiB: the restart then replays a journal compacted mid-job */
    setenv("STRATA_STATE_COMPACT_BYTES", "4096", 1);

    char wep[256] = "tcp://127.0.0.1:*", cep[256] = "tcp://127.0.0.1:*", farm[1300];
    snprintf(farm, sizeof farm, "%s/farm", out);
    pid_t coord = coord_start(pipe_path, state, wep, cep, log), w[3];
    CHECK(coord > 0);
    workers_start(pipe_path, wep, w);
    const char *submit[] = {"submit", job, "--coordinator", cep, NULL};
    char err[4096] = "";
    int rc = test_run_strata(submit, err, sizeof err, NULL, 0);
    int mid = rc == 0 ? wait_pngs(farm, 12) : -1;
    stop(coord, SIGKILL);
    ino_t before[IMAGES], after[IMAGES];
    int written = pngs(farm, before, IMAGES);
    int torn = tear_journal(state);
    /* the same endpoints: the workers find the new coordinator where the old one was */
    coord = mid == 0 ? coord_start(pipe_path, state, wep, cep, log) : -1;
    const char *again[] = {"submit", job, "--wait", "--coordinator", cep, NULL};
    int waited = coord > 0 ? test_run_strata(again, err, sizeof err, NULL, 0) : -1;
    stop(coord, SIGTERM);
    for (int i = 0; i < 3; i++)
        stop(w[i], SIGINT);
    CHECKF(rc == 0, "submit: %s", err);
    CHECKF(mid == 0 && written < IMAGES, "%d images written before the kill", written);
    CHECK(torn == 0 && coord > 0);
    CHECKF(waited == 0, "submit --wait after the restart: exit %d: %s", waited, err);
    char why[2600] = "", refdir[1300];
    snprintf(refdir, sizeof refdir, "%s/farm", ref);
    CHECKF(same_outputs(refdir, farm, IMAGES, why, sizeof why) == 0, "%s", why);
    pngs(farm, after, IMAGES);
    int redone = 0;
    for (int i = 0; i < IMAGES; i++)
        redone += before[i] && before[i] != after[i];
    fprintf(stderr, "  %d images written before the SIGKILL, %d of them written again\n", written,
            redone);
    /* only a write whose record waited for its group commit can be redone */
    CHECKF(redone <= 4, "%d of %d images written before the kill were written again", redone,
           written);
    CHECKF(test_file_mentions(log, "dropped 6 bytes"), "the torn record is not reported in %s",
           log);
    CHECKF(test_file_mentions(log, "images already finished"), "no replay reported in %s", log);
    CHECKF(test_file_mentions(log, "the journal was compacted"), "no compaction reported in %s",
           log);
}

/* `strata render` of the slow pipeline into out as job farm (count images, extra flag or
 * NULL), its stderr appended to log; its pid. */
static pid_t render_start(const char *pipe_path, const char *out, int count, const char *extra,
                          const char *log)
{
    char n[16];
    snprintf(n, sizeof n, "%d", count);
    char *argv[] = {(char *)test_strata_bin(),
                    "render",
                    "--pipeline",
                    (char *)pipe_path,
                    "--count",
                    n,
                    "--seed",
                    "1000",
                    "--resolution",
                    "32",
                    "--name",
                    "farm",
                    "--out",
                    (char *)out,
                    "--workers",
                    "l16=2,l32=1",
                    (char *)extra,
                    NULL};
    return test_spawn(argv, -1, log);
}

static int render_wait(pid_t pid)
{
    int status = -1;
    if (pid > 0) waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_TIMEOUT(render_interrupted_resumes_and_refuses_other_args, 300)
{
    char dir[1024], pipe_path[1200], ref[1200], out[1200], log[1200], farm[1300], refdir[1300];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(pipe_path, sizeof pipe_path, "%s/slow.yaml", dir);
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(log, sizeof log, "%s/render.log", dir);
    snprintf(farm, sizeof farm, "%s/farm", out);
    snprintf(refdir, sizeof refdir, "%s/farm", ref);
    CHECK(test_write_slow_pipeline(pipe_path, 40) == 0);
    CHECKF(render_ref(pipe_path, ref, IMAGES) == 0, "%s", "the clean render failed");

    /* stopped as Ctrl-C stops it, mid-job */
    pid_t r = render_start(pipe_path, out, IMAGES, NULL, log);
    int mid = wait_pngs(farm, 4);
    kill(r, SIGINT);
    int first = render_wait(r);
    ino_t before[IMAGES], after[IMAGES];
    int written = pngs(farm, before, IMAGES);
    CHECKF(mid == 0 && first == 1 && written < IMAGES, "render stopped with %d, %d images", first,
           written);
    /* other arguments for the same job: refused, naming the difference */
    int other = render_wait(render_start(pipe_path, out, IMAGES + 1, NULL, log));
    CHECKF(other == 2, "render with another --count: exit %d", other);
    CHECKF(test_file_mentions(log, "count 41, was 40") && test_file_mentions(log, "--fresh"),
           "no line naming the difference in %s", log);
    /* the same arguments: resumed */
    int resumed = render_wait(render_start(pipe_path, out, IMAGES, NULL, log));
    CHECKF(resumed == 0, "the render run again: exit %d: %s", resumed, tail_of(log));
    char why[2600] = "";
    CHECKF(same_outputs(refdir, farm, IMAGES, why, sizeof why) == 0, "%s", why);
    pngs(farm, after, IMAGES);
    int redone = 0;
    for (int i = 0; i < IMAGES; i++)
        redone += before[i] && before[i] != after[i];
    fprintf(stderr, "  %d images written before the stop, %d of them written again\n", written,
            redone);
    /* a stop drains the writes and commits: nothing written is done again */
    CHECKF(redone == 0, "%d of %d images written before the stop were written again", redone,
           written);
    /* once more, finished: nothing to do; --fresh starts over with other arguments */
    int done = render_wait(render_start(pipe_path, out, IMAGES, NULL, log));
    pngs(farm, before, IMAGES);
    CHECKF(done == 0 && !memcmp(before, after, sizeof before), "a finished render run again: %d",
           done);
    int fresh = render_wait(render_start(pipe_path, out, IMAGES + 1, "--fresh", log));
    CHECKF(fresh == 0, "render --fresh: exit %d", fresh);
    char *manifest;
    char mpath[1400];
    snprintf(mpath, sizeof mpath, "%s/manifest.jsonl", farm);
    long n = test_file_read(mpath, &manifest);
    int lines = 0;
    for (long k = 0; k < n; k++)
        lines += manifest[k] == '\n';
    if (n >= 0) free(manifest);
    CHECKF(lines == IMAGES + 1, "after --fresh --count %d the manifest has %d lines", IMAGES + 1,
           lines);
}

/* A state directory that fills up (a 8 KiB tmpfs mounted in a mount namespace of the
 * coordinator's own): the job accepted before completes with every image, the next SUBMIT is
 * refused with a line saying why. */
TEST_TIMEOUT(coordinator_full_state_refuses_new_jobs_and_loses_none, 200)
{
    char dir[1024], state[1200], out[1200], job[1200], log[1200], manifest[1400];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(job, sizeof job, "%s/job.yaml", dir);
    snprintf(log, sizeof log, "%s/coordinator.log", dir);
    snprintf(manifest, sizeof manifest, "%s/farm/manifest.jsonl", out);
    if (geteuid() != 0) { /* mounting a tmpfs, even in a namespace of its own, needs root */
        fprintf(stderr, "  skipped: not root\n");
        return;
    }
    CHECK(mkdir(state, 0755) == 0);
    write_job(job, "configs/pipelines/test-tiny.yaml", out);
    char script[2400];
    snprintf(script, sizeof script,
             "mount -t tmpfs -o size=8k tmpfs '%s' && exec '%s' coordinator --pipeline "
             "configs/pipelines/test-tiny.yaml --workers 'tcp://127.0.0.1:*' --clients "
             "'tcp://127.0.0.1:*' --state '%s' --out-root /",
             state, test_strata_bin(), state);
    int fds[2];
    CHECK(pipe(fds) == 0);
    char *argv[] = {"/usr/bin/unshare", "-m", "/bin/sh", "-c", script, NULL};
    pid_t coord = test_spawn(argv, fds[1], log);
    close(fds[1]);
    char line[1024] = "", wep[256] = "", cep[256] = "";
    test_read_line(fds[0], line, sizeof line, 30000);
    close(fds[0]);
    int up = sscanf(line, "strata coordinator: workers=%255s clients=%255s", wep, cep) == 2;
    pid_t w[3] = {0};
    if (up) workers_start("configs/pipelines/test-tiny.yaml", wep, w);
    char err[4096] = "", err2[4096] = "";
    const char *submit[] = {"submit", job, "--wait", "--coordinator", cep, NULL};
    int first = up ? test_run_strata(submit, err, sizeof err, NULL, 0) : -1;
    /* the same spec under another name: a new job, which the full state cannot take */
    char job2[1300];
    snprintf(job2, sizeof job2, "%s/job2.yaml", dir);
    FILE *f = fopen(job2, "w");
    if (f) {
        fprintf(f,
                "pipeline: configs/pipelines/test-tiny.yaml\nname: farm2\ncount: 4\n"
                "resolution: 32\nout: %s\n",
                out);
        fclose(f);
    }
    const char *second[] = {"submit", job2, "--coordinator", cep, NULL};
    int refused = up ? test_run_strata(second, err2, sizeof err2, NULL, 0) : -1;
    stop(coord, SIGTERM);
    for (int i = 0; i < 3; i++)
        stop(w[i], SIGINT);
    CHECKF(up, "the coordinator did not start on a tmpfs (%s): %s", line, log);
    CHECKF(first == 0, "the job accepted before the state filled: exit %d: %s", first, err);
    char *text;
    long n = test_file_read(manifest, &text);
    int ok = 0;
    for (char *at = n > 0 ? text : NULL; at && (at = strstr(at, "\"status\":\"ok\"")); at++)
        ok++;
    if (n >= 0) free(text);
    CHECKF(ok == IMAGES, "%d images ok in %s", ok, manifest);
    CHECKF(refused != 0 && strstr(err2, "state directory") && strstr(err2, "No space"),
           "a SUBMIT on a full state: exit %d: %s", refused, err2);
    CHECKF(test_file_mentions(log, "new jobs are refused"), "%s says nothing of the full state",
           log);
}

/* Fill the filesystem of path with a file there until it says ENOSPC. 0 or -1. */
static int fill_up(const char *path)
{
    static const char block[4096];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), full = 0;
    for (int i = 0; fd >= 0 && i < 1 << 16 && !full; i++)
        if (write(fd, block, sizeof block) < 0) full = errno == ENOSPC ? 1 : -1;
    if (fd >= 0) close(fd);
    return full == 1 ? 0 : -1;
}

/* Poll until the file at path holds what, or the process pid has ended, within ms: 1 when
 * found. */
static int wait_text(const char *path, const char *what, pid_t pid, int ms)
{
    struct timespec step = {0, 50 * 1000 * 1000};
    for (long long end = clock_now_ms() + ms; clock_now_ms() < end;) {
        if (test_file_mentions(path, what)) return 1;
        if (waitpid(pid, NULL, WNOHANG) != 0) return 0;
        nanosleep(&step, NULL);
    }
    return 0;
}

/* The user's report, shrunk: the job's out is a 200 KiB tmpfs (mounted in the test's own mount
 * namespace, which the processes it starts share), full before the job starts. The job stalls:
 * `strata submit --wait` keeps waiting and shows why, `strata status` says it on one line; once
 * the filler is deleted the job completes with every image in its manifest and the client exits
 * 0. */
TEST_TIMEOUT(farm_full_output_disk_stalls_the_job_until_space_is_back, 200)
{
    char dir[1024], out[1200], job[1200], log[1200], state[1200], filler[1300], cerr[1200];
    char manifest[1400], sout[4096] = "", serr[2048] = "";
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(job, sizeof job, "%s/job.yaml", dir);
    snprintf(log, sizeof log, "%s/coordinator.log", dir);
    snprintf(cerr, sizeof cerr, "%s/client.err", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(filler, sizeof filler, "%s/filler", out);
    snprintf(manifest, sizeof manifest, "%s/farm/manifest.jsonl", out);
    if (geteuid() != 0) {
        fprintf(stderr, "  skipped: not root (the test mounts a tmpfs)\n");
        return;
    }
    CHECK(mkdir(out, 0755) == 0);
    /* before any process or thread starts: they share this namespace, the runner does not */
    CHECK(unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
    CHECK(mount("tmpfs", out, "tmpfs", 0, "size=200k") == 0);
    CHECK(fill_up(filler) == 0);
    write_job(job, "configs/pipelines/test-tiny.yaml", out);
    char wep[256] = "tcp://127.0.0.1:*", cep[256] = "tcp://127.0.0.1:*";
    pid_t coord = coord_start("configs/pipelines/test-tiny.yaml", state, wep, cep, log), w[3] = {0};
    if (coord > 0) workers_start("configs/pipelines/test-tiny.yaml", wep, w);
    char *client_argv[] = {(char *)test_strata_bin(), "submit", job, "--wait",
                           "--coordinator",           cep,      NULL};
    pid_t client = coord > 0 ? test_spawn(client_argv, -1, cerr) : -1;
    int shown = client > 0 && wait_text(cerr, "No space left on device", client, 60000);
    const char *status[] = {"status", "--coordinator", cep, NULL};
    int st = shown ? test_run_strata(status, serr, sizeof serr, sout, sizeof sout) : -1;
    int waiting = client > 0 && waitpid(client, NULL, WNOHANG) == 0;
    int freed = unlink(filler) == 0, rc = -1, exited = 0;
    for (long long end = clock_now_ms() + 60000; client > 0 && !exited && clock_now_ms() < end;) {
        int wst;
        struct timespec step = {0, 50 * 1000 * 1000};
        if (waitpid(client, &wst, WNOHANG) == client)
            exited = 1, rc = WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
        else
            nanosleep(&step, NULL);
    }
    if (!exited) stop(client, SIGKILL);
    stop(coord, SIGTERM);
    for (int i = 0; i < 3; i++)
        stop(w[i], SIGTERM);
    char *text = NULL;
    long n = test_file_read(manifest, &text);
    int ok = 0;
    for (char *at = n > 0 ? text : NULL; at && (at = strstr(at, "\"status\":\"ok\"")); at++)
        ok++;
    free(text);
    umount2(out, MNT_DETACH);
    CHECKF(coord > 0, "the coordinator did not start: %s", tail_of(log));
    CHECKF(shown, "submit --wait never showed the full disk: %s", tail_of(cerr));
    CHECKF(st == 0 && strstr(sout, "stalled") && strstr(sout, "No space left on device"),
           "strata status: exit %d: %s %s", st, sout, serr);
    CHECKF(waiting && freed, "the client stopped waiting on a stalled job: %s", tail_of(cerr));
    CHECKF(exited && rc == 0, "submit --wait after space came back: exit %d: %s", rc,
           tail_of(cerr));
    CHECKF(ok == IMAGES, "%d images ok in %s", ok, manifest);
}
