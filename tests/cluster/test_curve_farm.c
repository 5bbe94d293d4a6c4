/* CURVE between real processes: `strata keygen` keys, a coordinator letting in two keys, a stub
 * worker and `strata submit --wait` with allowed keys render a job; a client with a stranger's
 * key gets no answer. */
#include "tests/test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Start build/strata with args (stdout to a pipe read into line, stderr to err_path). */
static pid_t spawn_strata(const char *const *args, const char *err_path, int *out_fd)
{
    const char *bin = getenv("STRATA_BIN");
    int fds[2];
    if (pipe(fds)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        FILE *err = fopen(err_path, "w");
        if (err) dup2(fileno(err), 2);
        char *argv[32] = {(char *)"strata"};
        for (int i = 0; args[i] && i < 30; i++)
            argv[i + 1] = (char *)args[i];
        execv(bin ? bin : "build/strata", argv);
        _exit(127);
    }
    close(fds[1]);
    *out_fd = fds[0];
    return pid;
}

static void stop(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGINT); /* a worker: at once, as the coordinator */
    waitpid(pid, NULL, 0);
}

typedef struct curve_farm {
    char dir[600], k[6][700], wep[256], cep[256];
    pid_t coord, worker;
} curve_farm;

/* Keys coord, alice, eve; the coordinator letting alice in; its endpoints. */
static int farm_up(curve_farm *f)
{
    const char *names[3] = {"coord", "alice", "eve"};
    for (int i = 0; i < 3; i++) {
        char base[700];
        snprintf(base, sizeof base, "%s/%s", f->dir, names[i]);
        const char *args[] = {"keygen", base, NULL};
        if (test_run_strata(args, NULL, 0, NULL, 0) != 0) return -1;
        snprintf(f->k[2 * i], sizeof f->k[0], "%s.key", base);
        snprintf(f->k[2 * i + 1], sizeof f->k[0], "%s.pub", base);
    }
    char err[700], line[600] = "";
    snprintf(err, sizeof err, "%s/coordinator.err", f->dir);
    const char *args[] = {"coordinator",
                          "--pipeline",
                          "configs/pipelines/test-tiny.yaml",
                          "--workers",
                          "tcp://127.0.0.1:*",
                          "--clients",
                          "tcp://127.0.0.1:*",
                          "--out-root",
                          f->dir,
                          "--key",
                          f->k[0],
                          "--allow",
                          f->k[3],
                          NULL};
    int fd = -1;
    f->coord = spawn_strata(args, err, &fd);
    FILE *out = f->coord > 0 ? fdopen(fd, "r") : NULL;
    int ok = out && fgets(line, sizeof line, out) &&
             sscanf(line, "strata coordinator: workers=%255s clients=%255s", f->wep, f->cep) == 2;
    if (out) fclose(out);
    return ok ? 0 : -1;
}

static void body_curve_farm(curve_farm *f, int *test_failed_)
{
    CHECK(farm_up(f) == 0);
    char err[4096], path[1200], wlog[700];
    snprintf(wlog, sizeof wlog, "%s/worker.err", f->dir);
    const char *wargs[] = {"worker", "--level", "l16",   "--connect",    f->wep,  "--stub-ms",
                           "0",      "--key",   f->k[2], "--server-key", f->k[1], NULL};
    int fd = -1;
    f->worker = spawn_strata(wargs, wlog, &fd);
    CHECK(f->worker > 0);
    close(fd);
    snprintf(path, sizeof path, "%s/job.yaml", f->dir);
    FILE *j = fopen(path, "w");
    CHECK(j);
    fprintf(j, "pipeline: configs/pipelines/test-tiny.yaml\nname: cj\ncount: 2\nresolution: 16\n"
               "out: out\n");
    fclose(j);
    const char *submit[] = {"submit", path,    "--wait",       "--coordinator", f->cep,
                            "--key",  f->k[2], "--server-key", f->k[1],         NULL};
    CHECKF(test_run_strata(submit, err, sizeof err, NULL, 0) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/out/cj/000001.png", f->dir);
    CHECK(access(path, F_OK) == 0);
    /* eve's key is not allowed: the handshake fails, nothing answers */
    const char *status[] = {"status", "--coordinator", f->cep,  "--key",
                            f->k[4],  "--server-key",  f->k[1], NULL};
    CHECK(test_run_strata(status, err, sizeof err, NULL, 0) == 1);
    CHECKF(strstr(err, "no answer"), "%s", err);
    const char *cancel[] = {"cancel", "cj",           "--coordinator", f->cep, "--key",
                            f->k[4],  "--server-key", f->k[1],         NULL};
    CHECK(test_run_strata(cancel, err, sizeof err, NULL, 0) == 1);
}

TEST_TIMEOUT(curve_farm_lets_in_listed_keys_only, 60)
{
    curve_farm f = {0};
    snprintf(f.dir, sizeof f.dir, "%s", test_tmpdir());
    body_curve_farm(&f, test_failed_);
    stop(f.worker);
    stop(f.coord);
}
