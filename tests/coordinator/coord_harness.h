/* Test harness for the coordinator: a coordinator running in a thread over tcp://127.0.0.1:*,
 * fake workers and clients as proto DEALER sockets driven from the test thread. Nothing waits
 * by sleeping: every wait is a receive with a deadline. */
#ifndef STRATA_TESTS_COORD_HARNESS_H
#define STRATA_TESTS_COORD_HARNESS_H

#include "coordinator/coordinator.h"
#include "proto/proto.h"

#include <pthread.h>
#include <stdint.h>

enum { FAKE_MAX_WORKERS = 8, FAKE_MAX_TASKS = 512, FAKE_FAIL_ALL = -2 };

typedef struct harness {
    coord_t *c;
    pthread_t thread;
    int started, rc;
    uint64_t checks; /* coord_checks_run when harness_stop freed the coordinator */
    void *ctx;
    pipeline_spec pipe;
    char dir[512];
    void *socks[32]; /* every test socket, closed by harness_stop */
    int nsocks;
} harness;

/* A fake worker: answers every TASK with a right-sized u8 image (or an error), then READY with
 * its capacity and the TASKs it received. */
typedef struct fake_worker {
    void *sock;
    char name[32];
    int level;
    int fail_image; /* answer this image with ok=false ("kaboom"); -1: never; FAKE_FAIL_ALL */
    int silent;     /* neither answers nor heartbeats */
    int hold;       /* receives TASKs but does not answer them yet */
    int shutdown;   /* got SHUTDOWN */
    uint32_t capacity, received; /* READY's: harness_worker's credits; TASKs received so far */
} fake_worker;

/* What the fakes saw. */
typedef struct task_seen {
    int worker, level, has_cond, cond_ok, resize;
    uint32_t image, attempt;
    uint64_t task, seed;
    int32_t class_label;
} task_seen;

typedef struct farm {
    fake_worker w[FAKE_MAX_WORKERS];
    int nw;
    task_seen seen[FAKE_MAX_TASKS];
    int nseen;
    /* backpressure: images whose first-level TASK arrived / whose last-level RESULT went out */
    int first_level, last_level, started, finished, max_open;
    uint8_t started_img[1024], finished_img[1024];
    int progress, done;
    char done_state[32];
    long long next_beat; /* when the workers that are not silent send HEARTBEAT next */
} farm;

/* A 3-level pipeline l16 (generate) -> l32 -> l64 (refine); models need not exist. */
pipeline_spec harness_pipeline(void);
/* Start a coordinator with o's non-zero fields over the defaults (tiny pipeline, free ports,
 * the test job parser, heartbeat 1000 ms x 10), its invariants checked after every message.
 * 0 or -1. */
int harness_start(harness *h, const coord_options *o);
/* Stop the coordinator (coord_stop, join); the test's sockets stay open. */
void harness_halt(harness *h);
/* Halt, close the test's sockets and free everything; coord_run's return value. */
int harness_stop(harness *h);

/* The job parser the tests use: "key: value" lines (name count seed seeds resolution out
 * priority class_label keep_levels start_level init_images). */
int harness_parse_job(const char *text, size_t len, const char *origin, job_spec *j, strata_err *e);

/* A DEALER connected to the worker (workers = 1) or client socket, with routing id rid. */
void *harness_dealer(harness *h, int workers, const char *rid);
/* Receive the next message that is not a HEARTBEAT within timeout_ms: 0 or -1. */
int harness_recv(void *sock, proto_msg *m, int timeout_ms);
/* Join as a worker of level (name) with credits slots (HELLO's slots, at least 1), expect
 * WELCOME, send READY with capacity credits. 0 or -1. */
int harness_worker(harness *h, fake_worker *w, const char *name, int level, uint32_t credits);
int harness_send(void *sock, const proto_msg *m);
/* READY: capacity TASKs wanted now, received TASKs got on this registration. */
int harness_ready(void *sock, uint32_t capacity, uint32_t received);
/* The u8 pixels a fake produces for (image, level) at side (malloc'd). */
uint8_t *harness_pixels(uint32_t image, int level, int side);
/* Send RESULT for task t: ok with harness_pixels at side, or an error. */
int harness_result(void *sock, uint64_t task, uint32_t attempt, int ok, uint32_t image, int level,
                   int side);
/* SUBMIT spec from client; 0 with the id, or -1 (with ERROR's message in id). */
int harness_submit(void *client, const char *spec, char *id, size_t idlen);
/* STATUS for job (NULL: all); 0 and the reply in m (free it), or -1. */
int harness_status(void *client, const char *job, proto_msg *m);

/* Wait up to ms for messages, let the fake workers answer theirs, read the watcher's (may be
 * NULL) and send the workers' heartbeats when due. 0, or -1 when polling fails. */
int farm_step(harness *h, farm *f, void *watcher, int ms);
/* Run the fake workers and a WATCHing client until DONE or timeout_ms: 0 on DONE. */
int farm_run(harness *h, farm *f, void *watcher, int timeout_ms);

/* Send WATCH, CANCEL or STATUS (type) for job from client. */
int harness_job_ref(void *client, enum proto_type type, const char *job);
/* The next message of type want on sock within timeout_ms (others, PROGRESS included, skipped):
 * 0 (free m), or -1. */
int harness_recv_type(void *sock, enum proto_type want, proto_msg *m, int timeout_ms);
/* The next TASK on sock, its scalar fields only (no cond, params, job or level). 0 or -1. */
int harness_get_task(void *sock, struct proto_task *out, int timeout_ms);
/* Re-HELLO on sock and wait for WELCOME: everything sock sent before has been handled. */
int harness_sync_worker(harness *h, void *sock, const char *name, int level);
int harness_file_exists(const char *path);
/* 1 when the PNG at path holds the tEXt chunk key=value. */
int harness_png_has_text(const char *path, const char *key, const char *value);
/* 1 when path is a side x side PNG holding harness_pixels(image, level, side). */
int harness_png_is(const char *path, uint32_t image, int level, int side);
/* Read a whole file; NULL if missing. */
char *harness_read_file(const char *path, size_t *len);

#endif
