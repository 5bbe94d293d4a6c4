/* common: the base every folder builds on: one error value (code + message, one code space),
 * a monotonic clock and atomic file writes. Depends on no other folder of strata. */
#ifndef STRATA_COMMON_H
#define STRATA_COMMON_H

#include <stddef.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------- errors */

/* Error codes are negative and shared by every folder. ERR_INPUT means the user gave something
 * bad (a file, flag or config): the command line exits with 2 for it and 1 for anything else
 * (err_exit_code). The frame codes (ERR_FRAME .. ERR_UNKNOWN) are a peer's bad message: the
 * process that receives one drops it and goes on, or fails with 1. */
enum err_code {
    ERR_OK = 0,
    ERR_RUNTIME = -1, /* the operation failed for a reason outside the caller's input */
    ERR_INPUT = -2,   /* bad input: a file, flag, config or request */
    ERR_NOMEM = -3,
    ERR_FRAME = -4,        /* not one well-formed MessagePack map: truncated, trailing bytes,
                              too deep, a count larger than the bytes left, a reserved byte */
    ERR_TOO_LARGE = -5,    /* a frame or a collection over its cap */
    ERR_MISSING = -6,      /* a required field is absent */
    ERR_TYPE = -7,         /* a field has the wrong MessagePack type */
    ERR_VALUE = -8,        /* right type, bad value: out of range, unknown dtype, data length
                              not matching the shape, NUL in a string, duplicate key */
    ERR_VERSION = -9,      /* a message's "v" is not PROTO_VERSION */
    ERR_UNKNOWN = -10,     /* unknown message "type" */
    ERR_IO = -11,          /* a ZeroMQ (or other system) call failed */
    ERR_TIMEOUT = -12,     /* nothing received (or sent) in time */
    ERR_INTR = -13,        /* interrupted by a signal: retry or stop */
    ERR_UNREACHABLE = -14, /* ROUTER: no peer with that routing id (any more) */
    ERR_ARG = -15,         /* caller error: bad options, a field the encoder cannot send */
};

/* An error value: the code and a one-line message naming the file, field or peer at fault,
 * e.g. "models/l32/config.json: block_out_channels: expected an array of integers". */
typedef struct strata_err {
    int code;
    char msg[512];
} strata_err;

/* Fill e (if not NULL) and return code, so callers can write `return err_set(e, ...)`. */
int err_set(strata_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A short name for code ("bad input", "timeout", ...). */
const char *err_name(int code);
/* The process exit status for an error code: 0 for ERR_OK, 2 for bad input, 1 otherwise. */
int err_exit_code(int code);

/* ---------------------------------------------------------------- clock */

/* Monotonic time (not wall time): milliseconds and seconds since an arbitrary start. */
long long clock_now_ms(void);
double clock_now_s(void);
/* CPU time of this process, all threads, in microseconds (CLOCK_PROCESS_CPUTIME_ID). */
long long clock_cpu_us(void);

/* ---------------------------------------------------------------- files */

/* Write the n pieces, in order, to path atomically: DIR/.NAME.tmp.PID, then rename, so a reader
 * sees the old file or the whole new one. With sync, the file and then its directory are fsync'd
 * too, so the write survives a power failure. Errors name the path, and leave errno at their
 * cause (ENOSPC, EACCES, ...) for a caller that tells a full disk from a bad path. */
int file_write_atomic(const char *path, const struct iovec *parts, int n, int sync, strata_err *e);

#endif
