/* The client side of the coordinator's protocol: request/reply and the WATCH stream. */
#include "cluster/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* A watch with no message for CLIENT_QUIET_MS asks WATCH again: a quiet job answers with
 * PROGRESS, a coordinator restarted on its state directory starts streaming again. No answer
 * to that: a fresh connection, tried after 1 s, then 2, 4, ... 32 s, for as long as it takes. */
enum {
    CLIENT_QUIET_MS = 5000,
    CLIENT_CALL_MS = 5000,
    CLIENT_TICK_MS = 500,
    CLIENT_BACKOFF_MS = 1000,
    CLIENT_BACKOFF_MAX_MS = 32000,
};

int client_open(client *c, const char *endpoint, strata_err *e)
{
    return client_open_curve(c, endpoint, NULL, e);
}

int client_open_curve(client *c, const char *endpoint, const proto_curve *curve, strata_err *e)
{
    memset(c, 0, sizeof *c);
    if (!endpoint) endpoint = getenv("STRATA_COORDINATOR");
    c->endpoint = endpoint && *endpoint ? endpoint : CLIENT_DEFAULT_ENDPOINT;
    c->ctx = zmq_ctx_new();
    if (!c->ctx) return err_set(e, ERR_IO, "zmq_ctx_new failed");
    proto_sock_opts o = {.linger_ms = -1};
    if (curve) o.curve = *curve;
    return proto_dealer_connect(c->ctx, c->endpoint, &o, &c->sock, e);
}

void client_close(client *c)
{
    proto_sock_close(&c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    c->ctx = NULL;
}

int client_call(client *c, const proto_msg *req, proto_msg *reply, int timeout_ms, strata_err *e)
{
    int rc = proto_send(c->sock, NULL, req, e);
    if (rc) return rc;
    rc = proto_recv(c->sock, NULL, reply, timeout_ms, e);
    if (rc == ERR_TIMEOUT)
        return err_set(e, rc, "no answer from the coordinator at %s in %d s", c->endpoint,
                       timeout_ms / 1000);
    return rc;
}

/* One job's progress as plain text, or as bars redrawn in place on a terminal. A level whose
 * workers are MPI rank groups says how many ranks (the largest group of the level). */
static void draw_progress(const struct proto_job_status *s, FILE *to, int tty, int *drawn)
{
    if (tty && *drawn) fprintf(to, "\x1b[%dA", *drawn);
    fprintf(to, "%s %s: %u/%u images%s\n", s->id, s->state, s->done, s->count, tty ? "\x1b[K" : "");
    if (s->failed) fprintf(to, "  %u failed\n", s->failed);
    /* a stalled job (its disk is full, say) is waited for: the reason says what to fix */
    if (s->reason) fprintf(to, "  %s%s\n", s->reason, tty ? "\x1b[K" : "");
    for (uint32_t i = 0; i < s->nlevels; i++) {
        const struct proto_level_status *l = &s->levels[i];
        if (tty) {
            int width = 24, full = s->count ? (int)((uint64_t)l->done * width / s->count) : 0;
            char bar[64];
            for (int k = 0; k < width; k++)
                bar[k] = k < full ? '#' : '.';
            bar[width] = 0;
            fprintf(to, "  %-6s [%s] %u/%u run %u queue %u %.0fs", l->name, bar, l->done, s->count,
                    l->running, l->queued, (double)l->compute_ms / 1000);
            if (l->ranks > 1) fprintf(to, " (%u ranks)", l->ranks);
            fputs("\x1b[K\n", to);
        } else {
            fprintf(to, "  %s done=%u running=%u queued=%u compute=%.1fs", l->name, l->done,
                    l->running, l->queued, (double)l->compute_ms / 1000);
            if (l->ranks > 1) fprintf(to, " ranks=%u", l->ranks);
            fputc('\n', to);
        }
    }
    if (tty) fputs("\x1b[J", to); /* a line drawn last time and not now (a reason) goes */
    *drawn = 1 + (s->failed ? 1 : 0) + (s->reason ? 1 : 0) + (int)s->nlevels;
    fflush(to);
}

/* Close the socket and connect a fresh one (the coordinator may be a new process). */
static int reconnect(client *c, strata_err *e)
{
    proto_sock_close(&c->sock);
    proto_sock_opts o = {.linger_ms = 0};
    return proto_dealer_connect(c->ctx, c->endpoint, &o, &c->sock, e);
}

/* Wait for the next message, running tick meanwhile. After CLIENT_QUIET_MS of silence WATCH is
 * sent again; silence after that means the coordinator is gone or restarting: reconnect with
 * backoff and ask again, until it answers. */
static int watch_next(client *c, const char *job, client_tick tick, void *ctx, proto_msg *m,
                      strata_err *e)
{
    int quiet_ms = 0, asked = 0, backoff = CLIENT_BACKOFF_MS;
    int step = tick ? CLIENT_TICK_MS : CLIENT_QUIET_MS / 5;
    for (;;) {
        int limit = asked ? backoff : CLIENT_QUIET_MS;
        int rc = proto_recv(c->sock, NULL, m, step, e);
        /* a signal interrupts the wait: tick is where the caller looks at it */
        if (rc != ERR_TIMEOUT && !(rc == ERR_INTR && tick)) {
            if (rc == 0 && asked > 1) fprintf(stderr, "strata: the coordinator answers again\n");
            return rc;
        }
        if (tick && (rc = tick(ctx))) return rc;
        if ((quiet_ms += step) < limit) continue;
        if (asked) {
            if (asked == 1)
                fprintf(stderr, "strata: no answer from the coordinator at %s: still waiting\n",
                        c->endpoint);
            if ((rc = reconnect(c, e))) return rc;
            if (backoff < CLIENT_BACKOFF_MAX_MS) backoff *= 2;
        }
        proto_msg w = {.type = PROTO_WATCH, .watch = {job}};
        if ((rc = proto_send(c->sock, NULL, &w, e)) && rc != ERR_TIMEOUT) return rc;
        asked++;
        quiet_ms = 0;
    }
}

int client_watch(client *c, const char *job, FILE *to, client_tick tick, void *ctx, strata_err *e)
{
    proto_msg req = {.type = PROTO_WATCH, .watch = {job}}, m;
    int rc = proto_send(c->sock, NULL, &req, e), drawn = 0, tty = isatty(fileno(to));
    uint32_t failed = 0;
    while (!rc && !(rc = watch_next(c, job, tick, ctx, &m, e))) {
        if (m.type == PROTO_PROGRESS) {
            draw_progress(&m.progress, to, tty, &drawn);
            failed = m.progress.failed;
        }
        if (m.type == PROTO_ERROR) rc = err_set(e, ERR_VALUE, "%s", m.error.message);
        if (m.type == PROTO_DONE) {
            int ok = !strcmp(m.done.state, "done") && !failed;
            fprintf(to, "%s %s%s\n", m.done.job, m.done.state,
                    failed ? " (with failed images)" : "");
            rc = ok ? 0 : 1;
            proto_msg_free(&m);
            break;
        }
        proto_msg_free(&m);
        /* a stream of PROGRESS never times out: the caller's checks (a signal) run here too */
        if (tick && (rc = tick(ctx))) break;
    }
    return rc;
}
