/* Helpers every `strata` command shares: messages and flag values. */
#include "cluster/cluster.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *cmd, int code, const char *msg)
{
    fprintf(stderr, "strata %s: %s\n", cmd, msg);
    return err_exit_code(code < 0 ? code : ERR_RUNTIME);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "strata %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see strata %s --help)\n", cmd);
    return CLI_EXIT_USAGE;
}

int cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *s, int lo, int hi, int *out)
{
    long v;
    if (cli_parse_long(s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int cli_flag_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
    if (cli_parse_long(s, lo, hi, out) == 0) return 0;
    return cli_usage(cmd, "--%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
}

void cli_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
