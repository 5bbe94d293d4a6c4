/* Disk trouble, on a real tmpfs mounted by the test in a mount namespace of its own (the runner
 * forks each test, so the mount goes with it; mounting needs root, which CI has: otherwise a skip
 * line). A job whose output disk is full stalls: STATUS names the path and the error, no image
 * fails, a stalled job can be cancelled, another job writing elsewhere completes meanwhile, a job
 * whose images all failed waits for its manifest; once the filler file is deleted the job
 * completes with a full manifest and PNGs byte-identical to a clean run. With --state, a disk
 * remounted read-only, a stop while stalled and a restart once it is writable again finish the
 * job. A full state directory refuses new jobs naming itself and the error, the job it accepted
 * completes, and once space is back new jobs are taken again. */
#include "tests/coordinator/coord_harness.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

enum { BIG = 12 };

typedef struct disk_bed {
    char base[1024], full[1100], other[1100], clean[1100], state[1100], filler[1200];
    int ro; /* the trouble is a read-only remount (EROFS), not a filler file (ENOSPC) */
} disk_bed;

/* base (a fresh folder of the test's own: each harness_start takes a new test_tmpdir) and a
 * tmpfs of size at base/MOUNT, private to this process. Before any thread starts (unshare
 * refuses a threaded process). 0; 1: not root (skip); -1: failed (reason on stderr). */
static int bed_mount(disk_bed *b, const char *mount_at, const char *size)
{
    const char *run = test_run_dir();
    snprintf(b->base, sizeof b->base, "%s/disk-XXXXXX", run && *run ? run : "/tmp");
    if (!mkdtemp(b->base)) return -1;
    snprintf(b->full, sizeof b->full, "%s/full", b->base);
    snprintf(b->other, sizeof b->other, "%s/other", b->base);
    snprintf(b->clean, sizeof b->clean, "%s/clean", b->base);
    snprintf(b->state, sizeof b->state, "%s/state", b->base);
    char *at = !strcmp(mount_at, "state") ? b->state : b->full;
    snprintf(b->filler, sizeof b->filler, "%s/filler", at);
    if (mkdir(at, 0755) < 0) return -1;
    if (geteuid() != 0) return 1;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", at, "tmpfs", 0, opts) < 0) {
        fprintf(stderr, "    cannot mount a tmpfs at %s: %s\n", at, strerror(errno));
        return -1;
    }
    return 0;
}

static void bed_remove(disk_bed *b)
{
    umount2(b->full, MNT_DETACH);
    umount2(b->state, MNT_DETACH);
    test_remove_tree(b->base);
}

/* Fill the filesystem of the filler file until it says ENOSPC. 0 or -1. */
static int fill(const char *path)
{
    static const char block[4096];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    for (int i = 0; i < 1 << 16; i++)
        if (write(fd, block, sizeof block) < 0) {
            int full = errno == ENOSPC;
            close(fd);
            return full ? 0 : -1;
        }
    close(fd);
    return -1;
}

/* The output disk stops taking writes: filled up, or remounted read-only. 0 or -1. */
static int disk_break(disk_bed *b)
{
    if (b->ro) return mount(NULL, b->full, NULL, MS_REMOUNT | MS_RDONLY, NULL);
    return fill(b->filler);
}

static int disk_fix(disk_bed *b)
{
    if (b->ro) return mount(NULL, b->full, NULL, MS_REMOUNT, NULL);
    return unlink(b->filler);
}

static const char *disk_error(const disk_bed *b)
{
    return b->ro ? "Read-only file system" : "No space left on device";
}

/* Job id's STATUS entry fields into st (strings copied into state and reason). 0 or -1. */
static int job_status(void *cl, const char *id, char *state, char *reason, uint32_t *done,
                      uint32_t *failed)
{
    proto_msg m;
    if (harness_status(cl, id, &m) < 0 || m.type != PROTO_STATUS_REPLY ||
        m.status_reply.njobs != 1) {
        proto_msg_free(&m);
        return -1;
    }
    const struct proto_job_status *st = &m.status_reply.jobs[0];
    snprintf(state, 32, "%s", st->state);
    snprintf(reason, 512, "%s", st->reason ? st->reason : "");
    *done = st->done;
    *failed = st->failed;
    proto_msg_free(&m);
    return 0;
}

/* Run the fake farm until job id's STATUS says want (a state), within ms. 0 or -1. */
static int farm_until(harness *h, farm *f, void *cl, const char *id, const char *want, int ms)
{
    char state[32], reason[512];
    uint32_t done, failed;
    for (long long end = clock_now_ms() + ms; clock_now_ms() < end;) {
        if (farm_step(h, f, NULL, 20) < 0) return -1;
        if (job_status(cl, id, state, reason, &done, &failed) == 0 && !strcmp(state, want))
            return 0;
    }
    return -1;
}

/* Submit spec from cl and run the farm until its DONE; DONE's state into f->done_state. */
static int run_job(harness *h, farm *f, void *cl, const char *spec, const char *id)
{
    char got[256];
    if (harness_submit(cl, spec, got, sizeof got) < 0 || harness_job_ref(cl, PROTO_WATCH, id) < 0)
        return -1;
    f->done = 0;
    return farm_run(h, f, cl, 20000);
}

/* Every PNG and the manifest of a/big and b/big have the same bytes. */
static int same_bytes(const char *a, const char *b, char *why, size_t len)
{
    for (int i = 0; i <= BIG; i++) {
        char pa[1300], pb[1300];
        const char *name = i < BIG ? "%s/big/%06d.png" : "%s/big/manifest.jsonl";
        snprintf(pa, sizeof pa, name, a, i);
        snprintf(pb, sizeof pb, name, b, i);
        size_t na = 0, nb = 0;
        char *da = harness_read_file(pa, &na), *db = harness_read_file(pb, &nb);
        int same = da && db && na == nb && !memcmp(da, db, na);
        free(da);
        free(db);
        if (!same) {
            snprintf(why, len, "%s and %s differ (or one is missing)", pa, pb);
            return 0;
        }
    }
    return 1;
}

/* The fake farm: a worker for each of l16 and l32. */
static int farm_join(harness *h, farm *f)
{
    memset(f, 0, sizeof *f);
    f->nw = 2;
    if (harness_worker(h, &f->w[0], "w16", 0, 2) < 0) return -1;
    return harness_worker(h, &f->w[1], "w32", 1, 2) < 0 ? -1 : 0;
}

/* "big" submitted, then its disk filled: it stalls saying why, with nothing failed; a job of
 * the same disk is cancelled while stalled; another job, writing elsewhere, completes. */
static void stall_big(harness *h, disk_bed *b, farm *f, int *test_failed_)
{
    void *cl = harness_dealer(h, 0, "client"), *cl2 = harness_dealer(h, 0, "client2");
    char spec[1400], id[256], state[32], reason[512];
    uint32_t done = 0, failed = 0;
    snprintf(spec, sizeof spec, "name: big\ncount: %d\nseed: 7\nresolution: 32\nout: %s\n", BIG,
             b->full);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    snprintf(spec, sizeof spec, "name: gone\ncount: 2\nresolution: 32\nout: %s\n", b->full);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(disk_break(b) == 0); /* the jobs' folders exist; not one PNG can be written now */
    CHECKF(farm_until(h, f, cl, "big", "stalled", 10000) == 0, "big never stalled");
    CHECK(job_status(cl, "big", state, reason, &done, &failed) == 0);
    CHECKF(strstr(reason, b->full) && strstr(reason, disk_error(b)) && !failed,
           "stalled big: reason '%s', %u failed", reason, failed);
    CHECKF(farm_until(h, f, cl, "gone", "stalled", 10000) == 0, "gone never stalled");
    proto_msg m;
    CHECK(harness_job_ref(cl2, PROTO_CANCEL, "gone") == 0);
    CHECK(harness_recv_type(cl2, PROTO_CANCELLED, &m, 5000) == 0);
    proto_msg_free(&m);
    snprintf(spec, sizeof spec, "name: side\ncount: 3\nresolution: 32\nout: %s\n", b->other);
    CHECK(run_job(h, f, cl2, spec, "side") == 0 && !strcmp(f->done_state, "done"));
    CHECK(job_status(cl, "big", state, reason, &done, &failed) == 0);
    CHECKF(!strcmp(state, "stalled") && done == 0 && failed == 0, "big: %s, %u done, %u failed",
           state, done, failed);
}

/* "big" runs to its end: every image right, each once "ok" in its manifest. */
static void finish_big(harness *h, disk_bed *b, farm *f, int *test_failed_)
{
    void *cl = harness_dealer(h, 0, "watcher");
    char path[1300];
    CHECK(cl && harness_job_ref(cl, PROTO_WATCH, "big") == 0);
    f->done = 0;
    CHECK(farm_run(h, f, cl, 40000) == 0);
    CHECKF(!strcmp(f->done_state, "done"), "big ended %s", f->done_state);
    for (uint32_t i = 0; i < BIG; i++) {
        snprintf(path, sizeof path, "%s/big/%06u.png", b->full, i);
        CHECKF(harness_png_is(path, i, 1, 32), "%s", path);
    }
    snprintf(path, sizeof path, "%s/big/manifest.jsonl", b->full);
    char *man = harness_read_file(path, NULL);
    int ok = 0;
    for (char *at = man; at && (at = strstr(at, "\"status\":\"ok\"")); at++)
        ok++;
    free(man);
    CHECKF(ok == BIG, "%d images ok in %s", ok, path);
}

/* 1 when job id has no task queued or running (STATUS). */
static int job_idle(void *cl, const char *id)
{
    proto_msg m;
    int idle = harness_status(cl, id, &m) == 0 && m.type == PROTO_STATUS_REPLY &&
               m.status_reply.njobs == 1;
    for (uint32_t l = 0; idle && l < m.status_reply.jobs[0].nlevels; l++)
        idle =
            !m.status_reply.jobs[0].levels[l].queued && !m.status_reply.jobs[0].levels[l].running;
    proto_msg_free(&m);
    return idle;
}

/* With big stalled and idle, "doomed" (its images all fail: no PNG) stalls on its manifest. */
static void stall_manifest(harness *h, disk_bed *b, farm *f, void *cl, int *test_failed_)
{
    char spec[1400], id[512], state[32], reason[512];
    uint32_t done, failed;
    int idle = 0;
    for (long long end = clock_now_ms() + 10000; !idle && clock_now_ms() < end;)
        idle = farm_step(h, f, NULL, 20) == 0 && job_idle(cl, "big");
    CHECKF(idle, "big still has tasks in flight");
    f->w[0].fail_image = FAKE_FAIL_ALL;
    snprintf(spec, sizeof spec, "name: doomed\ncount: 2\nresolution: 32\nout: %s\n", b->full);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECKF(farm_until(h, f, cl, "doomed", "stalled", 10000) == 0, "doomed never stalled");
    f->w[0].fail_image = -1;
    CHECK(job_status(cl, "doomed", state, reason, &done, &failed) == 0);
    CHECKF(failed == 2 && strstr(reason, "No space left"), "doomed: %u failed, %s", failed, reason);
}

/* A job whose images all failed stalls on its manifest; space back (the filler deleted) while
 * the coordinator waits, both jobs end; then (clean) the same job on a disk that never filled
 * gives the same bytes. */
static void body_space_back(harness *h, disk_bed *b, int clean, int *test_failed_)
{
    farm f;
    char spec[1400], why[2800];
    CHECK(farm_join(h, &f) == 0);
    f.w[0].fail_image = f.w[1].fail_image = -1;
    int failed = 0;
    stall_big(h, b, &f, &failed);
    CHECK(!failed);
    void *cl = harness_dealer(h, 0, "clean");
    stall_manifest(h, b, &f, cl, &failed);
    CHECK(!failed);
    CHECK(unlink(b->filler) == 0);
    finish_big(h, b, &f, &failed);
    CHECK(!failed);
    CHECK(farm_until(h, &f, cl, "doomed", "failed", 40000) == 0);
    snprintf(why, sizeof why, "%s/doomed/manifest.jsonl", b->full);
    CHECK(harness_file_exists(why));
    if (!clean) return; /* with --state, "big" elsewhere would be another job of a known name */
    snprintf(spec, sizeof spec, "name: big\ncount: %d\nseed: 7\nresolution: 32\nout: %s\n", BIG,
             b->clean);
    CHECK(cl && run_job(h, &f, cl, spec, "big") == 0 && !strcmp(f.done_state, "done"));
    CHECKF(same_bytes(b->full, b->clean, why, sizeof why), "%s", why);
}

/* With --state, the disk remounted read-only: the coordinator stops while stalled (its held
 * results are lost with it), the disk is made writable, and a coordinator on the same state
 * finishes the job (redoing what was held). */
static void body_restart(harness *h, const coord_options *o, disk_bed *b, int *test_failed_)
{
    farm f;
    CHECK(farm_join(h, &f) == 0);
    int failed = 0;
    stall_big(h, b, &f, &failed);
    CHECK(!failed);
    CHECK(harness_stop(h) == 0);
    CHECK(disk_fix(b) == 0);
    CHECK(harness_start(h, o) == 0);
    CHECK(farm_join(h, &f) == 0);
    finish_big(h, b, &f, &failed);
    CHECK(!failed);
}

static void full_output(int with_state, int restart, int *test_failed_)
{
    disk_bed b;
    int up = bed_mount(&b, "full", "256k");
    if (up == 1) {
        fprintf(stderr, "  skipped: not root (the test mounts a tmpfs)\n");
        bed_remove(&b);
        return;
    }
    CHECK(up == 0);
    b.ro = restart;
    coord_options o = {.out_root = b.base, .state_dir = with_state ? b.state : NULL};
    harness h;
    CHECK(harness_start(&h, &o) == 0);
    int failed = 0;
    if (restart)
        body_restart(&h, &o, &b, &failed);
    else
        body_space_back(&h, &b, !with_state, &failed);
    CHECK(harness_stop(&h) == 0);
    bed_remove(&b);
    CHECK(!failed);
}

TEST(coord_full_output_disk_stalls_the_job_and_loses_nothing)
{
    full_output(0, 0, test_failed_);
}

/* The same with --state: the held images' spooled inputs stay named until their PNGs are
 * written (coord_check counts them after every message). */
TEST(coord_full_output_disk_with_state_loses_nothing)
{
    full_output(1, 0, test_failed_);
}

TEST(coord_readonly_output_disk_with_state_survives_a_restart)
{
    full_output(1, 1, test_failed_);
}

/* The full state directory, from the job it accepted to the one it takes once space is back. */
static void body_full_state(harness *h, disk_bed *b, int *test_failed_)
{
    farm f = {0};
    f.nw = 2;
    CHECK(harness_worker(h, &f.w[0], "w16", 0, 2) == 0);
    CHECK(harness_worker(h, &f.w[1], "w32", 1, 2) == 0);
    void *cl = harness_dealer(h, 0, "client");
    char spec[1400], id[512];
    snprintf(spec, sizeof spec, "name: big\ncount: %d\nseed: 7\nresolution: 32\nout: %s\n", BIG,
             b->other);
    CHECKF(harness_submit(cl, spec, id, sizeof id) == 0, "%s", id);
    CHECK(fill(b->filler) == 0); /* accepted: from now on nothing fits in the state */
    CHECK(harness_job_ref(cl, PROTO_WATCH, "big") == 0);
    CHECK(farm_run(h, &f, cl, 20000) == 0 && !strcmp(f.done_state, "done"));
    for (uint32_t i = 0; i < BIG; i++) {
        char path[1300];
        snprintf(path, sizeof path, "%s/big/%06u.png", b->other, i);
        CHECKF(harness_png_is(path, i, 1, 32), "%s", path);
    }
    snprintf(spec, sizeof spec, "name: next\ncount: 2\nresolution: 32\nout: %s\n", b->other);
    CHECK(harness_submit(cl, spec, id, sizeof id) < 0);
    CHECKF(strstr(id, b->state) && strstr(id, "No space left on device"), "refused: %s", id);
    /* space is back: within the commit's retries, the next job is taken */
    CHECK(unlink(b->filler) == 0);
    int taken = 0;
    for (long long end = clock_now_ms() + 10000; !taken && clock_now_ms() < end;) {
        farm_step(h, &f, NULL, 250);
        taken = harness_submit(cl, spec, id, sizeof id) == 0;
    }
    CHECKF(taken, "still refused once space is back: %s", id);
    CHECK(harness_job_ref(cl, PROTO_WATCH, "next") == 0);
    f.done = 0;
    CHECK(farm_run(h, &f, cl, 20000) == 0 && !strcmp(f.done_state, "done"));
}

TEST(coord_full_state_dir_refuses_new_jobs_until_space_is_back)
{
    disk_bed b;
    int up = bed_mount(&b, "state", "512k");
    if (up == 1) {
        fprintf(stderr, "  skipped: not root (the test mounts a tmpfs)\n");
        bed_remove(&b);
        return;
    }
    CHECK(up == 0);
    coord_options o = {.out_root = b.base, .state_dir = b.state};
    harness h;
    CHECK(harness_start(&h, &o) == 0);
    int failed = 0;
    body_full_state(&h, &b, &failed);
    CHECK(harness_stop(&h) == 0);
    bed_remove(&b);
    CHECK(!failed);
}
