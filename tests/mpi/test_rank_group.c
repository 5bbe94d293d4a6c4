/* MPI rank groups (issue 14): a level's worker run as `mpirun -np R` ranks sharing its tile
 * windows (each owning rows, exchanging rows and window outputs) gives the same bytes as one
 * process, at any R. A small cascade of the tiny fixture
 * models with three tiled levels, one per sampler (DDPM, stochastic; DPM-Solver++ 2M; DDIM),
 * is rendered without --ranks and with every tiled level at 1, 2 and 3 ranks. */
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GEN_MODEL "tests/fixtures/unet/small3/model"
#define SR_MODEL "tests/fixtures/unet/sr/model"

/* A generator, then three tiled refine levels (9, 25 and 25 windows). */
static const char pipeline_text[] =
    "name: ranks\nlevels:\n"
    "  - {name: l16, kind: generate, model: @/" GEN_MODEL ", side: 16, steps: 2}\n"
    "  - {name: l64, kind: refine, model: @/" SR_MODEL ", side: 64, steps: 2,"
    " noise_level: 50, sampler: ddpm, tile: 32, overlap: 8}\n"
    "  - {name: l128, kind: refine, model: @/" SR_MODEL ", side: 128, steps: 3,"
    " noise_level: 20, sampler: dpm++2m, tile: 32, overlap: 8}\n"
    "  - {name: l256, kind: refine, model: @/" SR_MODEL ", side: 256, steps: 2,"
    " sampler: ddim, tile: 64, overlap: 16}\n";

/* 1 when the two files hold the same bytes, 0 when not, -1 when one cannot be read. */
static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb ? 1 : -1;
    for (int ca = 0, cb = 0; same == 1 && ca != EOF;) {
        ca = getc(fa);
        cb = getc(fb);
        if (ca != cb) same = 0;
    }
    if (same < 0) fprintf(stderr, "  cannot read %s or %s\n", a, b);
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* 1 when render's progress (err) has a line of level with "ranks=R" (the level's workers are
 * groups of R ranks), as strata's client prints it. */
static int progress_names_ranks(const char *err, const char *level, int ranks)
{
    char head[64], tail[32];
    snprintf(head, sizeof head, "\n  %s done=", level);
    snprintf(tail, sizeof tail, " ranks=%d\n", ranks);
    for (const char *p = strstr(err, head); p; p = strstr(p + 1, head)) {
        const char *end = strchr(p + 1, '\n');
        const char *r = strstr(p, tail);
        if (r && end && r == end - strlen(tail) + 1) return 1;
    }
    return 0;
}

/* 1 when mpirun can be run here. */
static int have_mpirun(void)
{
    const char *argv[] = {"/bin/sh", "-c", "command -v mpirun", NULL};
    return test_run_program(argv, NULL, 0, NULL, 0) == 0;
}

/* Render the pipeline's 256 image (with every level kept) into DIR/j/; ranks: NULL or the
 * value of --ranks. Returns the exit code; err gets stderr. */
static int render(const char *pipe, const char *dir, const char *ranks, char *err, size_t errlen)
{
    const char *args[24] = {"render", pipe ? "--pipeline" : NULL,
                            pipe,     "--count",
                            "1",      "--seed",
                            "11",     "--resolution",
                            "256",    "--keep-levels",
                            "--out",  dir,
                            "--name", "j",
                            NULL};
    if (ranks) {
        args[14] = "--ranks";
        args[15] = ranks;
        args[16] = NULL;
    }
    return test_run_strata(args, err, errlen, NULL, 0);
}

TEST_TIMEOUT(rank_groups_give_the_same_bytes_at_any_rank_count, 240)
{
    if (!have_mpirun()) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char pipe[4096], err[32768], a[4200], b[4200];
    const char *dir = test_tmpdir();
    CHECK(test_write_pipeline(dir, pipeline_text, pipe, sizeof pipe) == 0);
    snprintf(a, sizeof a, "%s/base", dir);
    int rc = render(pipe, a, NULL, err, sizeof err);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);
    CHECKF(!strstr(err, " ranks="), "progress names ranks of plain workers: %s", err);
    /* the last: an untiled level on 2 ranks (one has no window), 4 ranks over a 3 x 3 grid (two
     * share a row of windows), 5 over 5 x 5 */
    static const char *const ranks[] = {"l64=1,l128=1,l256=1", "l64=2,l128=2,l256=2",
                                        "l64=3,l128=3,l256=3", "l16=2,l64=4,l128=5,l256=2"};
    static const char *const files[] = {"000000.l64.png", "000000.l128.png", "000000.png"};
    for (int r = 0; r < 4; r++) {
        char out[4096];
        snprintf(out, sizeof out, "%s/r%d", dir, r + 1);
        rc = render(pipe, out, ranks[r], err, sizeof err);
        CHECKF(rc == 0, "render --ranks %s exit %d: %s", ranks[r], rc, err);
        if (r) CHECKF(strstr(err, "MPI ranks"), "%s", err);
        /* the progress line of a level run as rank groups names its ranks (none at 1 rank) */
        static const int l256_ranks[] = {1, 2, 3, 2};
        if (r)
            CHECKF(progress_names_ranks(err, "l256", l256_ranks[r]),
                   "no l256 line with ranks=%d: %s", l256_ranks[r], err);
        else
            CHECKF(!strstr(err, " ranks="), "--ranks ...=1 shows ranks: %s", err);
        for (int k = 0; k < 3; k++) {
            snprintf(a, sizeof a, "%s/base/j/%s", dir, files[k]);
            snprintf(b, sizeof b, "%s/j/%s", out, files[k]);
            CHECKF(same_file(a, b) == 1, "--ranks %s: %s differs from the run without ranks",
                   ranks[r], files[k]);
        }
    }
}

/* The path of build/strata (STRATA_BIN, as test_run_strata runs it). */
static const char *strata_bin(void)
{
    const char *bin = getenv("STRATA_BIN");
    return bin && *bin ? bin : "build/strata";
}

TEST_TIMEOUT(rank_group_idle_costs_no_cpu, 60)
{
    if (!have_mpirun()) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char pipe[4096], out[4096], err[4096];
    const char *dir = test_tmpdir();
    CHECK(test_write_pipeline(dir, pipeline_text, pipe, sizeof pipe) == 0);
    const char *argv[] = {"tests/mpi/idle_cpu.sh", strata_bin(), pipe, "l256", "3", "3", dir, NULL};
    int rc = test_run_program(argv, err, sizeof err, out, sizeof out);
    CHECKF(rc == 0, "idle_cpu.sh exit %d: %s", rc, err);
    int ranks = 0, tck = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int pid, ticks;
        if (sscanf(line, "clk_tck %d", &tck) == 1) continue;
        if (sscanf(line, "rank %d %d", &pid, &ticks) != 2) continue;
        ranks++;
        fprintf(stderr, "  idle rank (pid %d): %d ticks of CPU in 3 s\n", pid, ticks);
        /* 3% of a core at most (measured: 0 or 1 tick; a busy-polling rank takes ~300) */
        CHECKF(ticks <= 9, "an idle rank used %d ticks of CPU in 3 s", ticks);
    }
    CHECKF(ranks == 3 && tck > 0, "expected 3 ranks: %s", out);
}

/* SIGTERM to every rank of a group mid-task (what mpirun forwards) drains it as one worker: the
 * task is finished and taken, no rank dies mid-task, mpirun exits 0 (tests/mpi/rank_drain.sh). */
TEST_TIMEOUT(rank_group_drains_on_sigterm, 90)
{
    if (!have_mpirun()) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char err[8192];
    const char *argv[] = {"tests/mpi/rank_drain.sh",
                          strata_bin(),
                          "configs/pipelines/test-tiny.yaml",
                          "l16",
                          test_tmpdir(),
                          NULL};
    int rc = test_run_program(argv, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "rank_drain.sh exit %d: %s", rc, err);
}

TEST_TIMEOUT(rank_group_killed_rank_restarts_with_the_same_bytes, 240)
{
    if (!have_mpirun()) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char pipe[4096], err[16384], a[4200], b[4200], base[4096], killed[4096];
    const char *dir = test_tmpdir();
    CHECK(test_write_pipeline(dir, pipeline_text, pipe, sizeof pipe) == 0);
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(killed, sizeof killed, "%s/killed", dir);
    int rc = render(pipe, base, NULL, err, sizeof err);
    CHECKF(rc == 0, "render exit %d: %s", rc, err);
    const char *argv[] = {"tests/mpi/rank_kill.sh", strata_bin(), pipe, killed, "l256", NULL};
    rc = test_run_program(argv, err, sizeof err, NULL, 0);
    CHECKF(rc == 0, "rank_kill.sh exit %d: %s", rc, err);
    CHECKF(strstr(err, "killed rank 1") && strstr(err, "starting another"), "%s", err);
    snprintf(a, sizeof a, "%s/j/000000.png", base);
    snprintf(b, sizeof b, "%s/j/000000.png", killed);
    CHECKF(same_file(a, b) == 1, "the image differs after a rank was killed: %s", err);
    snprintf(a, sizeof a, "%s/j/manifest.jsonl", base);
    snprintf(b, sizeof b, "%s/j/manifest.jsonl", killed);
    CHECKF(same_file(a, b) == 1, "the manifest differs after a rank was killed");
}

TEST_TIMEOUT(rank_group_refusing_its_level_ends_the_render_with_2, 60)
{
    if (!have_mpirun()) {
        fprintf(stderr, "  skipped: no mpirun on this machine (tools/deps.sh installs it)\n");
        return;
    }
    char pipe[4096], err[8192], cwd[2048];
    const char *dir = test_tmpdir();
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(pipe, sizeof pipe, "%s/bad.yaml", dir);
    FILE *f = fopen(pipe, "w");
    CHECK(f != NULL);
    /* l64 refines with a model that takes no cond: every rank refuses it when loading */
    fprintf(f,
            "name: bad\nlevels:\n"
            "  - {name: l16, kind: generate, model: %s/" GEN_MODEL ", side: 16, steps: 2}\n"
            "  - {name: l64, kind: refine, model: %s/" GEN_MODEL ", side: 64, steps: 2,"
            " tile: 32, overlap: 8}\n",
            cwd, cwd);
    CHECK(fclose(f) == 0);
    const char *args[] = {"render", "--pipeline", pipe, "--count", "1",     "--resolution",
                          "64",     "--out",      dir,  "--ranks", "l64=2", NULL};
    int rc = test_run_strata(args, err, sizeof err, NULL, 0);
    CHECKF(rc == 2, "render exit %d (expected 2): %s", rc, err);
    CHECKF(strstr(err, "the l64 worker refused its level"), "%s", err);
}
