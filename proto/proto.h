/* proto: the farm's wire protocol and the level contract. Message types, the MessagePack codec
 * (msgpack-c), thin ZeroMQ socket helpers (libzmq), and what coordinator and workers must agree
 * on about levels: their kinds, their settings (WELCOME) and which levels a job runs (the
 * planner). The only header other folders include from proto/.
 * Knows nothing of models: a tensor is a dtype, a shape and bytes.
 *
 * Wire format (docs/design.md section 5): every ZeroMQ frame is ONE MessagePack map holding
 * "v" (PROTO_VERSION) and "type" (the upper-case message name, e.g. "TASK"), plus the fields
 * below. Field names are snake_case. Unknown fields are ignored (so a newer peer may add some);
 * missing required fields, wrong types, duplicate keys, trailing bytes and anything over the caps
 * are errors. Integers are MessagePack ints (any width), floats float32/float64, strings str,
 * tensor data bin (little-endian elements).
 *
 *   worker -> coordinator
 *     HELLO        worker:str level:str slots:uint ranks:uint pid:uint host:str [model_hash:str]
 *     READY        capacity:uint received:uint [draining:bool]
 *                  capacity: the TASKs the worker can take now (absolute, not added to earlier
 *                  READYs); received: the TASKs it got since its WELCOME; draining (false when
 *                  absent): it takes no more TASKs, finishes what it holds, then says BYE.
 *                  Sent when its capacity changes and again every heartbeat while it holds none.
 *     RESULT       task:uint64 attempt:uint ok:bool elapsed_ms:uint64 [cpu_us:uint64]
 *                  output:tensor (required when ok)   error:str (required when !ok)
 *     HEARTBEAT    (no fields)
 *     BYE          (no fields)
 *   coordinator -> worker
 *     WELCOME      config:level config                 (the level's settings: kind, steps, ...)
 *     TASK         task:uint64 attempt:uint job:str image:uint seed:uint64 level:str
 *                  level_index:uint class_label:int (-1: none) [cond:tensor]
 *                  [params:{[resize:uint] [steps:uint] [direct:bool]}]
 *     SHUTDOWN     (no fields)
 *     ERROR        message:str   (not registered: HELLO again; "refused: ...": the worker ends)
 *   client -> coordinator                    coordinator -> client
 *     SUBMIT       spec:str (job YAML)        SUBMITTED  job:str          or ERROR message:str
 *     STATUS       [job:str]                  STATUS_REPLY jobs:[job entry]
 *     WATCH        job:str                    PROGRESS (job entry fields, inline) ..., then DONE
 *     CANCEL       job:str                    CANCELLED job:str           or ERROR
 *                                             DONE       job:str state:str
 *   job entry:   {id:str state:str count:uint done:uint failed:uint levels:[level entry]
 *                 [reason:str]}  (state "stalled": reason says why, e.g. its outputs' disk is full)
 *   level entry: {name:str queued:uint running:uint done:uint [compute_ms:uint] [ranks:uint]}
 *   tensor:      {dtype:"u8"|"f32" shape:[uint, up to 4] data:bin}, len(data) == prod(shape)*size
 *   level config: {mode:str index:uint side:int steps:int [sampler:str] [eta:num]
 *                 [noise_level:int] [guidance:num] [tile:int] [overlap:int] [heartbeat_ms:int]
 *                 [liveness:int] [tile_blend:str] [model_hash:str]}
 *                 (mode: a level_kind_name; tile_blend: a tile_blend_name; num: an int or a float)
 *                 No file path: a worker finds the level's model itself (--model, --pipeline) and
 *                 model_hash says whether it is the coordinator's. An older coordinator's "model"
 *                 (its path) is an unknown field, ignored.
 *
 * "uint" fields are 32-bit on both sides (values above 2^32-1 are rejected); uint64 fields and
 * class_label (int32) are as named. A lease is the pair (task, attempt) carried by TASK and
 * RESULT; the coordinator decides whether a RESULT's lease is still current. */
#ifndef STRATA_PROTO_H
#define STRATA_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---------------------------------------------------------------- limits */

#define PROTO_VERSION 1
/* Largest frame accepted (ZMQ_MAXMSGSIZE on every socket, and checked again on decode):
 * a 4096x4096x3 float32 image is 192 MiB. */
#define PROTO_MAX_FRAME ((size_t)256 << 20)
/* Deepest nesting of arrays/maps; the top-level map is depth 1. */
#define PROTO_MAX_DEPTH 8
/* Most MessagePack objects in one frame: bounds what msgpack-c allocates (24 bytes each). */
#define PROTO_MAX_OBJECTS ((size_t)1 << 20)
#define PROTO_MAX_DIMS 4
#define PROTO_MAX_RID 255 /* longest ZeroMQ routing id */

/* ---------------------------------------------------------------- values */

/* A tensor's bytes on the wire. When decoded, data points into the received frame (zero copy)
 * and lives as long as the message; it may be unaligned, so copy it out (memcpy) before reading
 * it as float. When encoding, data is the caller's and nbytes must equal prod(shape) * size. */
enum proto_dtype {
    PROTO_DTYPE_NONE = 0, /* no tensor (an absent optional field) */
    PROTO_DTYPE_U8 = 1,
    PROTO_DTYPE_F32 = 2,
};

typedef struct proto_tensor {
    enum proto_dtype dtype;
    uint32_t ndim; /* 0..PROTO_MAX_DIMS; 0 is a scalar */
    uint64_t shape[PROTO_MAX_DIMS];
    const void *data;
    size_t nbytes;
} proto_tensor;

/* Bytes of one element of dtype (0 for NONE). */
size_t proto_dtype_size(enum proto_dtype dtype);

/* ---------------------------------------------------------------- the level contract */

/* Largest image side of a level or a TASK's resize: a u8 RESULT image, side * side * 3 bytes,
 * must fit PROTO_MAX_FRAME. */
#define PROTO_MAX_SIDE 8192

enum {
    PIPELINE_MAX_LEVELS = 8,
    SPEC_NAME_MAX = 32,
    SPEC_PATH_MAX = 1024,
};

/* What a level does. Pipeline files ("kind") and WELCOME ("mode") name it by level_kind_name. */
typedef enum level_kind {
    LEVEL_KIND_GENERATE, /* samples from pure noise */
    LEVEL_KIND_REFINE,   /* super-resolution: sampling loop on concat([x_t, upsampled cond]) */
    LEVEL_KIND_DIRECT,   /* one model evaluation on the upsampled cond: the x0 of a 1-step loop */
    LEVEL_KIND_COUNT,
} level_kind;

/* "generate", "refine" or "direct"; NULL out of range. */
const char *level_kind_name(level_kind kind);
/* The kind called name: 0, or ERR_VALUE (out untouched) for any other text or NULL. */
int level_kind_parse(const char *name, level_kind *out);

/* How a tiled level combines its windows. STEP: their model outputs blended at every step, one
 * sampler on the whole canvas (docs/design.md section 3). FINISHED: each window sampled to the end
 * on its own and only the finished windows blended, once, built to compare with STEP
 * (tests/worker/test_seams.c). Pipeline files and WELCOME name it by tile_blend_name. */
typedef enum tile_blend_mode {
    TILE_BLEND_STEP,
    TILE_BLEND_FINISHED,
    TILE_BLEND_COUNT,
} tile_blend_mode;

/* "step" or "finished"; NULL out of range. */
const char *tile_blend_name(tile_blend_mode mode);
/* The mode called name: 0, or ERR_VALUE (out untouched) for any other text or NULL. */
int tile_blend_parse(const char *name, tile_blend_mode *out);

/* One level of a pipeline (a YAML file in configs/pipelines/). */
typedef struct level_spec {
    char name[SPEC_NAME_MAX]; /* e.g. "l128" */
    level_kind kind;
    char model[SPEC_PATH_MAX];  /* diffusers UNet2DModel directory, relative paths resolved
                                   against the pipeline file's directory */
    int side;                   /* output side in pixels */
    int steps;                  /* sampling steps (ignored by direct) */
    char sampler[16];           /* "" = the model's scheduler_config.json class, or ddim, ddpm,
                                   dpm++2m */
    float eta;                  /* DDIM eta */
    int noise_level;            /* noise-conditioning augmentation timestep of cond, 0 = none */
    float guidance;             /* classifier-free guidance scale, 1 = off */
    int tile;                   /* tile side; 0 = no tiling */
    int overlap;                /* tile overlap in pixels */
    int pool;                   /* default worker count of this level's pool */
    tile_blend_mode tile_blend; /* step (default) or finished */
} level_spec;

typedef struct pipeline_spec {
    char path[SPEC_PATH_MAX];
    char name[SPEC_NAME_MAX];
    int nlevels;
    level_spec levels[PIPELINE_MAX_LEVELS];
} pipeline_spec;

/* The levels a job runs: first .. end-1 of its pipeline. */
typedef struct pipeline_plan {
    int first, end;
} pipeline_plan;

/* The one level planner (the coordinator's SUBMIT and `strata render` both call it). end: the
 * shortest prefix of p whose last side is >= resolution (the final image is then resized down
 * exactly to resolution); all levels when even the last is smaller (resized up). first: 0, or
 * with a start_level the index of that level, which must be a refine or direct level within
 * the prefix (it takes init images as its input). resolution must be 1..PROTO_MAX_SIDE.
 * ERR_INPUT with "FIELD: what is wrong", FIELD being resolution or start_level. */
int pipeline_plan_levels(const pipeline_spec *p, int resolution, const char *start_level,
                         pipeline_plan *out, strata_err *e);

/* ---------------------------------------------------------------- messages */

enum proto_type {
    PROTO_NONE = 0,
    PROTO_HELLO,
    PROTO_READY,
    PROTO_RESULT,
    PROTO_HEARTBEAT,
    PROTO_BYE,
    PROTO_WELCOME,
    PROTO_TASK,
    PROTO_SHUTDOWN,
    PROTO_SUBMIT,
    PROTO_SUBMITTED,
    PROTO_ERROR,
    PROTO_STATUS,
    PROTO_STATUS_REPLY,
    PROTO_WATCH,
    PROTO_PROGRESS,
    PROTO_DONE,
    PROTO_CANCEL,
    PROTO_CANCELLED,
    PROTO_TYPE_COUNT,
};

/* The wire name of a type ("TASK"), or NULL if out of range. */
const char *proto_type_name(enum proto_type type);

/* String fields are NUL-terminated. Optional strings are NULL when absent. */
struct proto_hello {
    const char *worker, *level, *host;
    const char *model_hash; /* optional */
    uint32_t slots, ranks, pid;
};

/* READY: the worker's state, absolute, so that a lost READY costs nothing and a lost TASK shows:
 * the coordinator's count of TASKs sent on the registration above received, while the worker
 * holds none, is a TASK that never arrived (docs/design.md section 5). */
struct proto_ready {
    uint32_t capacity; /* TASKs it can take now (0 while loading, busy or draining) */
    uint32_t received; /* TASKs received on this registration (since its WELCOME) */
    bool draining;     /* it takes no more TASKs, finishes the one it holds and leaves with BYE */
};

struct proto_result {
    uint64_t task;
    uint32_t attempt;
    bool ok;
    const char *error;   /* required when !ok */
    proto_tensor output; /* required when ok */
    uint64_t elapsed_ms;
    uint64_t cpu_us; /* optional (0 when absent): the worker process's CPU time on the task, all
                        its threads, so a job's compute budget is measured as CPU seconds */
};

/* A level's settings, the same for every worker of the level (WELCOME's config). Optional
 * fields absent on the wire decode as the defaults shown; the encoder always sends them. Which
 * values a worker can run (ranges) is the worker's to check. */
typedef struct proto_level_config {
    level_kind kind; /* "mode" on the wire */
    uint32_t index;  /* the level's position in the pipeline: part of every noise key */
    int32_t side, steps;
    const char *sampler; /* "" (default): the model's scheduler class */
    float eta;           /* 0 */
    int32_t noise_level; /* 0 */
    float guidance;      /* 1 */
    int32_t tile, overlap;
    int32_t heartbeat_ms; /* 1000: the coordinator's heartbeat interval */
    int32_t liveness;     /* 3: heartbeats of silence before a peer is presumed gone */
    /* "step": a tile_blend_name. An older coordinator leaves it out: its levels blend at every
     * step. An older worker ignores it and blends at every step whatever it says. */
    const char *tile_blend;
    const char *model_hash; /* "": unknown; else the SHA-256 (hex) of the coordinator's copy of
                               the level's model, which the worker's must match */
} proto_level_config;

struct proto_welcome {
    proto_level_config config;
};

/* TASK's optional settings (the "params" map on the wire, left out when all are 0). */
struct proto_task_params {
    uint32_t resize; /* 0: none; else the side the RESULT image must have */
    /* a job's planned sampling (budget_s, steps): 0 keeps WELCOME's steps; direct runs a refine
     * level as LEVEL_KIND_DIRECT (one model evaluation). Older workers ignore both. */
    uint32_t steps;
    bool direct;
};

struct proto_task {
    uint64_t task;
    uint32_t attempt;
    const char *job;
    uint32_t image;
    uint64_t seed;
    const char *level;
    uint32_t level_index;
    int32_t class_label; /* -1: none */
    proto_tensor cond;   /* optional: dtype NONE when absent */
    struct proto_task_params params;
};

struct proto_submit {
    const char *spec; /* the job spec, YAML text */
};

/* SUBMITTED, STATUS (job optional: NULL asks for every job), WATCH, CANCEL, CANCELLED. */
struct proto_job_ref {
    const char *job;
};

struct proto_error {
    const char *message;
};

struct proto_level_status {
    const char *name;
    uint32_t queued, running, done;
    uint64_t compute_ms; /* optional on the wire (0 when absent): workers' time on done tasks */
    uint32_t ranks;      /* optional (0 when absent): the most MPI ranks of one worker of the
                          * level now joined (HELLO's ranks; 1: plain processes, 0: none joined) */
};

/* One job's progress: an entry of STATUS_REPLY, and the body of PROGRESS. */
struct proto_job_status {
    const char *id, *state;
    uint32_t count, done, failed;
    uint32_t nlevels;
    const struct proto_level_status *levels;
    const char *reason; /* NULL, or why the job is stalled ("cannot write DIR: ...") */
};

struct proto_status_reply {
    uint32_t njobs;
    const struct proto_job_status *jobs;
};

struct proto_done {
    const char *job, *state;
};

struct proto_msg_priv;

/* A message: type selects the union member. Build one by hand (zero it, set type and the
 * member; pointers stay the caller's) to encode it; a decoded one owns its strings, arrays and
 * (for proto_recv / proto_decode_owned) the frame its tensors point into, until proto_msg_free. */
typedef struct proto_msg {
    enum proto_type type;
    union {
        struct proto_hello hello;
        struct proto_ready ready;
        struct proto_result result;
        struct proto_welcome welcome;
        struct proto_task task;
        struct proto_submit submit;
        struct proto_job_ref submitted, status, watch, cancel, cancelled;
        struct proto_error error;
        struct proto_status_reply status_reply;
        struct proto_job_status progress;
        struct proto_done done;
    };
    struct proto_msg_priv *priv_; /* decoded storage; NULL for a hand-built message */
} proto_msg;

/* Release what a decoded message owns and zero it. NULL and hand-built messages are fine. */
void proto_msg_free(proto_msg *m);

/* ---------------------------------------------------------------- codec */

/* Check that buf[0..len) is exactly one MessagePack object within the caps (PROTO_MAX_FRAME,
 * PROTO_MAX_DEPTH, PROTO_MAX_OBJECTS, every count within the bytes left), without allocating.
 * proto_decode runs it first; exposed for tests and for other MessagePack readers. */
int proto_frame_check(const void *buf, size_t len, strata_err *e);

/* Encode m into a fresh malloc'd buffer (*out, *len; the caller frees it with free()).
 * Checks m as strictly as decoding would (required fields set, tensor sizes consistent). */
int proto_encode(const proto_msg *m, void **out, size_t *len, strata_err *e);

/* Decode buf[0..len) into m (zeroed first: a message still held there is not freed, so free it
 * before reusing m). Strings and arrays are copied into storage m owns;
 * tensor data points into buf, which must outlive m's use of it. On error m holds nothing, but
 * m->type names the message when its "v" and "type" were good (PROTO_NONE otherwise), so a
 * receiver can tell a bad WELCOME from a bad frame. Either way, call proto_msg_free(m) when done.
 */
int proto_decode(const void *buf, size_t len, proto_msg *m, strata_err *e);

/* Like proto_decode, and m takes ownership of buf: proto_msg_free (or a failed decode) calls
 * release(buf, hint). Tensor data then lives exactly as long as m. */
int proto_decode_owned(const void *buf, size_t len, void (*release)(void *buf, void *hint),
                       void *hint, proto_msg *m, strata_err *e);

/* ---------------------------------------------------------------- sockets */

/* CURVE keys: Z85 text, PROTO_KEY_LEN characters. All NULL: plaintext. A ROUTER with a
 * secret_key is a CURVE server that fails closed (ZMQ_ZAP_ENFORCE_DOMAIN): it admits only the
 * clients a ZAP handler (proto_zap_new, in the same context) allows. A DEALER with secret_key
 * and server_key is a CURVE client (public_key NULL: derived from secret_key). */
#define PROTO_KEY_LEN 40
typedef struct proto_curve {
    const char *public_key;
    const char *secret_key;
    const char *server_key; /* DEALER: the server's public key */
} proto_curve;

/* Read a key file (NAME.pub or NAME.key: one Z85 key and a newline) into out. ERR_INPUT naming
 * the file. */
int proto_key_read(const char *path, char out[PROTO_KEY_LEN + 1], strata_err *e);
/* The public key of a Z85 secret key. */
int proto_key_public(const char *secret, char out[PROTO_KEY_LEN + 1], strata_err *e);
/* Write a new key pair: NAME.key (the secret, mode 0600) and NAME.pub. Existing files are
 * kept (ERR_INPUT). */
int proto_keygen(const char *name, strata_err *e);

/* The ZAP handler: a thread admitting CURVE clients whose public key (Z85) is one of keys,
 * refusing every other; the key admitted is the connection's User-Id (proto_recv_peer). One
 * per context, started before the CURVE servers bind; destroyed before the context ends. */
typedef struct proto_zap proto_zap_t;
int proto_zap_new(void *ctx, const char *const *keys, uint32_t nkeys, proto_zap_t **out,
                  strata_err *e);
void proto_zap_destroy(proto_zap_t **z);

/* Socket options; a zeroed struct (or NULL) means the defaults. */
typedef struct proto_sock_opts {
    size_t max_frame;       /* ZMQ_MAXMSGSIZE; 0: PROTO_MAX_FRAME */
    int linger_ms;          /* how long close waits for unsent frames; 0: 1000, < 0: drop at once */
    int send_timeout_ms;    /* ZMQ_SNDTIMEO; 0: 10000, < 0: block */
    int sndhwm, rcvhwm;     /* ZMQ_SNDHWM / ZMQ_RCVHWM in frames; 0: libzmq's default (1000) */
    const char *routing_id; /* DEALER: our routing id (<= 255 bytes); NULL: the ROUTER picks */
    proto_curve curve;
} proto_sock_opts;

/* A ZeroMQ routing id (ROUTER side). */
typedef struct proto_rid {
    uint8_t len;
    uint8_t id[PROTO_MAX_RID];
} proto_rid;

/* Create a ROUTER in ctx bound to endpoint ("tcp://127.0.0.1:*" picks a port; see
 * proto_sock_endpoint). ZMQ_ROUTER_MANDATORY (a send to an unknown peer fails) is on; there is
 * no ZMQ_ROUTER_HANDOVER: a second connection claiming a routing id in use is refused by libzmq,
 * so no one takes over a connected peer. libzmq heartbeats off (the farm has its own). *out is
 * the socket, NULL on error. */
int proto_router_bind(void *ctx, const char *endpoint, const proto_sock_opts *o, void **out,
                      strata_err *e);
/* Create a DEALER in ctx connected to endpoint; same options. */
int proto_dealer_connect(void *ctx, const char *endpoint, const proto_sock_opts *o, void **out,
                         strata_err *e);
/* Close *sock (if not NULL) and set it to NULL. */
void proto_sock_close(void **sock);
/* The socket's last bound/connected endpoint (with the port chosen for "*") into buf. */
int proto_sock_endpoint(void *sock, char *buf, size_t len, strata_err *e);

/* Encode m and send it. On a ROUTER, to is the peer's routing id (required); on a DEALER, to
 * must be NULL. ERR_UNREACHABLE: the peer is gone; ERR_TIMEOUT: its queue stayed full
 * for send_timeout_ms. */
int proto_send(void *sock, const proto_rid *to, const proto_msg *m, strata_err *e);

/* Wait up to timeout_ms (< 0: forever, 0: poll) for one message and decode it into m, which
 * then owns the frame (proto_msg_free it; when it does not decode, m is as proto_decode leaves
 * it). On a ROUTER, *from gets the sender's routing id
 * (from required), also when the frame fails to decode, so the caller can answer or drop it.
 * A frame over the socket's max_frame is ERR_TOO_LARGE (tcp/ipc peers are already cut off
 * by libzmq; inproc is not capped by libzmq, so it is checked here). */
int proto_recv(void *sock, proto_rid *from, proto_msg *m, int timeout_ms, strata_err *e);
/* proto_recv, and the sender's ZAP User-Id (its CURVE public key, Z85) into user; "" on a
 * plaintext socket. user may be NULL. */
int proto_recv_peer(void *sock, proto_rid *from, char user[PROTO_KEY_LEN + 1], proto_msg *m,
                    int timeout_ms, strata_err *e);

/* Routing id from a NUL-terminated string (truncated to PROTO_MAX_RID bytes). */
proto_rid proto_rid_from_str(const char *s);
/* 1 when a and b are the same routing id. */
int proto_rid_equal(const proto_rid *a, const proto_rid *b);

#endif
