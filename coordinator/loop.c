/* The coordinator's event loop: two ROUTER sockets (workers, clients), the writer pool's fd and
 * the HTTP server's (options.http) polled by one thread; every message is handled to completion,
 * then queued work is dispatched. With options.check the whole state is verified after each of
 * these steps. */
#include "coordinator/coord_internal.h"

#include <errno.h>
#include <stdio.h>
#include <zmq.h>

enum {
    COORD_WAKE_MS = 100,          /* longest poll: how soon coord_stop is noticed */
    COORD_STOP_WRITES_MS = 10000, /* how long a stop waits for the PNGs being written */
};

/* Read up to COORD_DRAIN_BATCH messages from one socket and handle each. */
static void drain(coord_t *c, void *sock, int workers)
{
    for (int i = 0; i < COORD_DRAIN_BATCH && !c->stop; i++) {
        proto_rid from;
        proto_msg m;
        strata_err e = {0};
        char user[PROTO_KEY_LEN + 1];
        int rc = proto_recv_peer(sock, &from, user, &m, 0, &e);
        if (rc == ERR_TIMEOUT || rc == ERR_INTR) break;
        if (rc < 0) {
            coord_log(c, 1, "dropped a frame on the %s socket: %s", workers ? "worker" : "client",
                      e.msg);
            if (!workers) coord_client_garbage(c, &from, e.msg);
            proto_msg_free(&m);
            coord_check_after(c, "a bad frame");
            if (rc == ERR_IO) break;
            continue;
        }
        if (workers)
            coord_on_worker_msg(c, &from, user, &m);
        else
            coord_on_client_msg(c, &from, user, &m);
        coord_check_after(c, proto_type_name(m.type));
        proto_msg_free(&m);
    }
}

/* Heartbeats and watcher flushes; the ms the loop may sleep before the next timer. */
static int timers(coord_t *c)
{
    long long now = clock_now_ms();
    if (now >= c->next_heartbeat_ms) {
        coord_workers_tick(c, now);
        c->next_heartbeat_ms = now + c->o.heartbeat_ms;
        coord_check_after(c, "the heartbeat tick");
    }
    /* at most half a heartbeat (liveness), at most COORD_WAKE_MS (coord_stop from a thread) */
    int wait = c->o.heartbeat_ms / 2 < COORD_WAKE_MS ? c->o.heartbeat_ms / 2 : COORD_WAKE_MS;
    if (wait < 1) wait = 1;
    long long to_hb = c->next_heartbeat_ms - now;
    if (to_hb < wait) wait = to_hb < 1 ? 1 : (int)to_hb;
    int to_watch = coord_watchers_flush(c, now);
    if (to_watch >= 0 && to_watch < wait) wait = to_watch < 1 ? 1 : to_watch;
    int to_commit = coord_state_commit(c, now, 0);
    if (to_commit >= 0 && to_commit < wait) wait = to_commit < 1 ? 1 : to_commit;
    int retried = 0, to_retry = coord_writes_retry(c, now, &retried);
    if (to_retry >= 0 && to_retry < wait) wait = to_retry < 1 ? 1 : to_retry;
    if (retried) coord_check_after(c, "a retry of a stalled job's writes");
    return wait;
}

/* At a stop, the PNGs being written are finished and recorded (images, manifests, the
 * journal), so a restart on the same state does not write them again. Those held for a disk
 * that cannot take them are lost with the process (with --state, a restart redoes them). */
static void finish_writes(coord_t *c)
{
    for (long long end = clock_now_ms() + COORD_STOP_WRITES_MS;
         coord_writes_in_pool(c) && clock_now_ms() < end;) {
        zmq_pollitem_t it = {NULL, coord_writer_fd(c->writer), ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, COORD_WAKE_MS) > 0) coord_writes_collect(c);
    }
    if (c->writes)
        coord_log(c, 1, "stopping with %u PNGs not written (their disk cannot take them)%s",
                  c->writes, c->journal ? ": a restart on this state redoes them" : "");
}

int coord_run(coord_t *c)
{
    int rc = 0;
    strata_err e = {0};
    if (coord_restore(c, &e) < 0) {
        coord_log(c, 1, "%s", e.msg);
        return 1;
    }
    coord_check_after(c, "the replay of the state directory");
    c->next_heartbeat_ms = clock_now_ms() + c->o.heartbeat_ms;
    coord_log(c, 0, "serving %s: workers %s, clients %s", c->pipe.name, c->wep, c->cep);
    while (!c->stop) {
        int wait = timers(c);
        int http = coord_http_fd(c, &wait);
        zmq_pollitem_t items[4] = {{c->wsock, 0, ZMQ_POLLIN, 0},
                                   {c->csock, 0, ZMQ_POLLIN, 0},
                                   {NULL, coord_writer_fd(c->writer), ZMQ_POLLIN, 0},
                                   {NULL, http, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, http >= 0 ? 4 : 3, wait) < 0) {
            if (zmq_errno() == EINTR) continue;
            coord_log(c, 1, "poll: %s", zmq_strerror(zmq_errno()));
            rc = 1;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) drain(c, c->wsock, 1);
        if (items[1].revents & ZMQ_POLLIN) drain(c, c->csock, 0);
        if (items[2].revents & ZMQ_POLLIN) {
            coord_writes_collect(c);
            coord_check_after(c, "finished writes");
        }
        if (http >= 0) coord_http_serve(c); /* also when only its timeout is due */
        coord_dispatch(c);
        coord_check_after(c, "dispatch");
    }
    coord_workers_shutdown(c);
    finish_writes(c);
    coord_state_commit(c, clock_now_ms(), 1);
    if (c->journal)
        coord_log(c, 0, "state: the journal was compacted %llu times",
                  (unsigned long long)c->compactions);
    if (c->o.check) coord_log(c, 1, "%llu invariant checks passed", (unsigned long long)c->checks);
    coord_log(c, 0, "stopped");
    return rc;
}
