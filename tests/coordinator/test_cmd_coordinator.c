/* `strata coordinator` as a process: usage errors exit 2 naming the culprit; a live one prints
 * its endpoints line, answers a client, and on SIGTERM tells its workers SHUTDOWN and exits 0;
 * with STRATA_COORD_CHECK=1 it verifies its invariants after every message and says how often. */
#include "proto/proto.h"
#include "tests/test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

TEST(coord_cmd_usage_errors)
{
    char err[1024], out[4096];
    const char *help[] = {"coordinator", "--help", NULL};
    CHECK(test_run_strata(help, err, sizeof err, out, sizeof out) == 0);
    CHECK(strstr(out, "usage: strata coordinator") && strstr(out, "--max-in-flight"));
    const char *missing[] = {"coordinator", "--pipeline", "no/such.yaml", NULL};
    CHECK(test_run_strata(missing, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "no/such.yaml"), "%s", err);
    const char *flag[] = {"coordinator", "--bogus", NULL};
    CHECK(test_run_strata(flag, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "--bogus"), "%s", err);
    const char *num[] = {"coordinator", "--liveness", "0", NULL};
    CHECK(test_run_strata(num, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "--liveness"), "%s", err);
    const char *ep[] = {"coordinator", "--pipeline", "configs/pipelines/test-tiny.yaml",
                        "--workers",   "nonsense",   NULL};
    CHECK(test_run_strata(ep, err, sizeof err, NULL, 0) == 2);
    CHECKF(strstr(err, "nonsense"), "%s", err);
}

/* Start build/strata coordinator on free ports, its invariants checked, its stderr into
 * err_path; its pid, and its stdout as a FILE. */
static pid_t spawn_coordinator(FILE **out, const char *err_path)
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
        setenv("STRATA_COORD_CHECK", "1", 1);
        execl(bin ? bin : "build/strata", "strata", "coordinator", "--pipeline",
              "configs/pipelines/test-tiny.yaml", "--workers", "tcp://127.0.0.1:*", "--clients",
              "tcp://127.0.0.1:*", "--heartbeat-ms", "200", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *out = fdopen(fds[0], "r");
    return pid;
}

static void body_live(pid_t pid, FILE *out, int *test_failed_)
{
    char line[600], wep[256], cep[256];
    CHECK(out && fgets(line, sizeof line, out));
    CHECKF(sscanf(line, "strata coordinator: workers=%255s clients=%255s", wep, cep) == 2, "%s",
           line);
    void *ctx = zmq_ctx_new(), *cl = NULL, *w = NULL;
    proto_sock_opts o = {.linger_ms = -1}, wo = {.linger_ms = -1, .routing_id = "w1"};
    strata_err e = {0};
    proto_msg m = {.type = PROTO_STATUS};
    int ok = proto_dealer_connect(ctx, cep, &o, &cl, &e) == 0 &&
             proto_dealer_connect(ctx, wep, &wo, &w, &e) == 0 && proto_send(cl, NULL, &m, &e) == 0;
    ok = ok && proto_recv(cl, NULL, &m, 5000, &e) == 0 && m.type == PROTO_STATUS_REPLY &&
         m.status_reply.njobs == 0;
    proto_msg_free(&m);
    m = (proto_msg){.type = PROTO_HELLO, .hello = {.worker = "w1", .level = "l32", .host = "t"}};
    ok = ok && proto_send(w, NULL, &m, &e) == 0 && proto_recv(w, NULL, &m, 5000, &e) == 0 &&
         m.type == PROTO_WELCOME;
    proto_msg_free(&m);
    int shutdown = 0;
    if (ok && kill(pid, SIGTERM) == 0)
        for (int i = 0; i < 20 && !shutdown; i++) {
            if (proto_recv(w, NULL, &m, 500, &e) < 0) break;
            shutdown = m.type == PROTO_SHUTDOWN;
            proto_msg_free(&m);
        }
    proto_sock_close(&cl);
    proto_sock_close(&w);
    zmq_ctx_term(ctx);
    CHECKF(ok, "%s", e.msg);
    CHECK(shutdown);
}

TEST(coord_cmd_serves_until_sigterm)
{
    FILE *out = NULL;
    char err_path[1100];
    snprintf(err_path, sizeof err_path, "%s/coordinator.err", test_tmpdir());
    pid_t pid = spawn_coordinator(&out, err_path);
    CHECK(pid > 0);
    body_live(pid, out, test_failed_);
    int status = 0;
    kill(pid, SIGTERM);
    CHECK(waitpid(pid, &status, 0) == pid);
    if (out) fclose(out);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    /* STATUS and HELLO were handled, each followed by a check */
    char log[4096] = "";
    FILE *f = fopen(err_path, "r");
    size_t n = f ? fread(log, 1, sizeof log - 1, f) : 0;
    if (f) fclose(f);
    log[n] = 0;
    const char *line = strstr(log, "coordinator: ");
    unsigned long long checks = 0;
    while (line && sscanf(line, "coordinator: %llu invariant checks passed", &checks) != 1)
        line = strstr(line + 1, "coordinator: ");
    CHECKF(checks >= 2, "no count of invariant checks in: %s", log);
}
