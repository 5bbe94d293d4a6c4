/* cluster: the `strata` command line, configs, level planning, the local launcher.
 * The only header other folders include from cluster/. */
#ifndef STRATA_CLUSTER_H
#define STRATA_CLUSTER_H

#define STRATA_VERSION "0.1.0"

/* Exit codes of every command (docs/design.md section 9). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_RUNTIME = 1,
    CLI_EXIT_USAGE = 2,
};

/* Subcommands: argv[0] is the subcommand's name. Each returns an exit code. */
int cmd_unet(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

/* Print "strata CMD: message" to stderr and return the exit code for the strata_err code. */
int cli_fail(const char *cmd, int code, const char *msg);
/* Print "strata CMD: <message> (see strata CMD --help)"; returns CLI_EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole decimal number in [lo, hi] (0), or -1. */
int cli_parse_long(const char *s, long lo, long hi, long *out);
int cli_parse_int(const char *s, int lo, int hi, int *out);
/* cli_parse_long for the value of --flag of command cmd: 0, or CLI_EXIT_USAGE after saying so. */
int cli_flag_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
/* A whole float (0), or -1. */
int cli_parse_float(const char *s, float *out);
/* SIGINT and SIGTERM call handler (no SA_RESTART, so a blocking poll wakes at once to see it). */
void cli_on_stop_signals(void (*handler)(int));

#endif
