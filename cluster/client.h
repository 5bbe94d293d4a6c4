/* Internal to cluster/: talking to a coordinator's client socket, shared by submit, status,
 * watch, cancel and render. */
#ifndef STRATA_CLUSTER_CLIENT_H
#define STRATA_CLUSTER_CLIENT_H

#include "proto/proto.h"

#include <stdio.h>

#define CLIENT_DEFAULT_ENDPOINT "tcp://127.0.0.1:5556"

typedef struct client {
    void *ctx;
    void *sock;
    const char *endpoint;
} client;

/* Connect to endpoint (NULL: $STRATA_COORDINATOR, else CLIENT_DEFAULT_ENDPOINT). */
int client_open(client *c, const char *endpoint, strata_err *e);
/* client_open with CURVE keys (NULL or no keys: plaintext). */
int client_open_curve(client *c, const char *endpoint, const proto_curve *curve, strata_err *e);

/* CURVE keys of a client or worker command: --key FILE and --server-key FILE.pub, else
 * $STRATA_KEY and $STRATA_SERVER_KEY; both or neither. */
typedef struct cli_keys {
    char key[PROTO_KEY_LEN + 1], server[PROTO_KEY_LEN + 1];
    proto_curve curve; /* points into key and server; all NULL without keys */
} cli_keys;
/* 0, or CLI_EXIT_USAGE after one line "strata CMD: ..." naming the file or flag. */
int cli_keys_load(const char *cmd, const char *key_file, const char *server_file, cli_keys *k);
void client_close(client *c);
/* Send req and wait up to timeout_ms for one reply (decoded into reply; free it). */
int client_call(client *c, const proto_msg *req, proto_msg *reply, int timeout_ms, strata_err *e);

/* Called while a watch waits; a non-zero return stops the watch with that value. */
typedef int (*client_tick)(void *ctx);

/* Follow a job's PROGRESS messages until DONE, drawing per-level bars on a terminal and plain
 * lines otherwise; tick (may be NULL) runs about twice a second. Returns 0 when the job
 * finished with every image written, 1 when it ended otherwise (failed images, cancelled), a
 * tick's value, or a negative proto code. */
int client_watch(client *c, const char *job, FILE *to, client_tick tick, void *ctx, strata_err *e);

#endif
