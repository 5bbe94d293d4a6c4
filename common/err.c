/* The error value shared by every folder. */
#include "common/common.h"

#include <stdarg.h>
#include <stdio.h>

int err_set(strata_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK:
        return "ok";
    case ERR_RUNTIME:
        return "failed";
    case ERR_INPUT:
        return "bad input";
    case ERR_NOMEM:
        return "out of memory";
    case ERR_FRAME:
        return "bad frame";
    case ERR_TOO_LARGE:
        return "too large";
    case ERR_MISSING:
        return "missing field";
    case ERR_TYPE:
        return "wrong type";
    case ERR_VALUE:
        return "bad value";
    case ERR_VERSION:
        return "protocol version mismatch";
    case ERR_UNKNOWN:
        return "unknown message type";
    case ERR_IO:
        return "I/O error";
    case ERR_TIMEOUT:
        return "timeout";
    case ERR_INTR:
        return "interrupted";
    case ERR_UNREACHABLE:
        return "peer unreachable";
    case ERR_ARG:
        return "bad argument";
    }
    return "unknown error";
}

int err_exit_code(int code)
{
    if (code == ERR_OK) return 0;
    return code == ERR_INPUT ? 2 : 1;
}
