/* `strata submit | status | watch | cancel`: the client commands. */
#include "cluster/client.h"
#include "cluster/cluster.h"
#include "cluster/config.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CLIENT_REPLY_MS = 5000 };

typedef struct client_args {
    const char *endpoint, *arg, *key, *server_key;
    int wait, json;
    cli_keys keys;
} client_args;

static const char client_help[] =
    "usage: strata submit JOB.yaml [--wait] [--coordinator ENDPOINT]\n"
    "       strata status [JOB] [--json] [--coordinator ENDPOINT]\n"
    "       strata watch JOB [--coordinator ENDPOINT]\n"
    "       strata cancel JOB [--coordinator ENDPOINT]\n"
    "       (each also takes [--key FILE --server-key FILE.pub])\n\n"
    "Talk to a running coordinator (default endpoint $STRATA_COORDINATOR, "
    "else " CLIENT_DEFAULT_ENDPOINT
    ").\nsubmit checks the job file, sends it and prints the job id; --wait then follows it like\n"
    "watch. status lists jobs (or one) with per-level counts. watch shows per-level progress\n"
    "until the job ends. Exit codes: 0 success, 1 the job failed or the coordinator did not\n"
    "answer, 2 bad input or usage.\n\n"
    "  --key FILE            this client's CURVE secret key (strata keygen NAME: NAME.key);\n"
    "                        default $STRATA_KEY\n"
    "  --server-key FILE.pub the coordinator's public key; default $STRATA_SERVER_KEY\n";

/* Parses [ARG] and the flags; needs_arg: ARG is required. */
static int parse_client_args(const char *cmd, int argc, char **argv, int needs_arg, client_args *a)
{
    static const struct option opts[] = {{"coordinator", 1, 0, 'c'},
                                         {"wait", 0, 0, 'w'},
                                         {"json", 0, 0, 'j'},
                                         {"help", 0, 0, 'h'},
                                         {"key", 1, 0, 'k'},
                                         {"server-key", 1, 0, 's'},
                                         {0, 0, 0, 0}};
    int c;
    memset(a, 0, sizeof *a);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'c')
            a->endpoint = optarg;
        else if (c == 'k')
            a->key = optarg;
        else if (c == 's')
            a->server_key = optarg;
        else if (c == 'w' && !strcmp(cmd, "submit"))
            a->wait = 1;
        else if (c == 'j' && !strcmp(cmd, "status"))
            a->json = 1;
        else if (c == 'h') {
            fputs(client_help, stdout);
            return -1;
        } else {
            fprintf(stderr, "strata %s: unknown or incomplete option '%s' (see strata %s --help)\n",
                    cmd, argv[optind - 1], cmd);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) a->arg = argv[optind++];
    if ((needs_arg && !a->arg) || optind < argc) {
        fprintf(stderr, "strata %s: %s (see strata %s --help)\n", cmd,
                needs_arg && !a->arg ? "missing argument" : "too many arguments", cmd);
        return CLI_EXIT_USAGE;
    }
    return cli_keys_load(cmd, a->key, a->server_key, &a->keys);
}

static int client_fail(const char *cmd, const strata_err *e)
{
    fprintf(stderr, "strata %s: %s\n", cmd, e->msg);
    return CLI_EXIT_RUNTIME;
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    *len = buf ? fread(buf, 1, CONFIG_MAX_BYTES, f) : 0;
    fclose(f);
    if (buf) buf[*len] = 0;
    return buf;
}

int cmd_submit(int argc, char **argv)
{
    client_args a;
    int rc = parse_client_args("submit", argc, argv, 1, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    strata_err je = {0};
    job_spec j;
    /* check locally first: errors then name the file and line, not "SUBMIT" */
    if (job_load(a.arg, &j, &je)) {
        fprintf(stderr, "strata submit: %s\n", je.msg);
        return CLI_EXIT_USAGE;
    }
    job_spec_free(&j);
    size_t len;
    char *text = read_text(a.arg, &len);
    client c;
    strata_err e = {0};
    proto_msg req = {.type = PROTO_SUBMIT, .submit = {text}}, reply = {0};
    rc = client_open_curve(&c, a.endpoint, &a.keys.curve, &e);
    if (!rc) rc = client_call(&c, &req, &reply, CLIENT_REPLY_MS, &e);
    free(text);
    if (!rc && reply.type == PROTO_ERROR) {
        fprintf(stderr, "strata submit: %s: %s\n", a.arg, reply.error.message);
        rc = CLI_EXIT_USAGE;
    } else if (!rc && reply.type == PROTO_SUBMITTED) {
        printf("%s\n", reply.submitted.job);
        fflush(stdout);
        if (a.wait) rc = client_watch(&c, reply.submitted.job, stderr, NULL, NULL, &e);
        if (rc < 0) rc = client_fail("submit", &e);
    } else if (rc) {
        rc = client_fail("submit", &e);
    }
    proto_msg_free(&reply);
    client_close(&c);
    return rc;
}

static json_t *status_json(const struct proto_job_status *s)
{
    json_t *levels = json_array();
    for (uint32_t i = 0; i < s->nlevels; i++)
        json_array_append_new(levels,
                              json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", s->levels[i].name,
                                        "queued", (json_int_t)s->levels[i].queued, "running",
                                        (json_int_t)s->levels[i].running, "done",
                                        (json_int_t)s->levels[i].done, "compute_ms",
                                        (json_int_t)s->levels[i].compute_ms, "ranks",
                                        (json_int_t)s->levels[i].ranks));
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o}", "id", s->id, "state", s->state, "count",
                          (json_int_t)s->count, "done", (json_int_t)s->done, "failed",
                          (json_int_t)s->failed, "levels", levels);
    if (o && s->reason) json_object_set_new(o, "reason", json_string(s->reason));
    return o;
}

static void print_status(const struct proto_status_reply *r, int as_json)
{
    if (as_json) {
        json_t *jobs = json_array();
        for (uint32_t i = 0; i < r->njobs; i++)
            json_array_append_new(jobs, status_json(&r->jobs[i]));
        char *text = json_dumps(jobs, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
        json_decref(jobs);
        return;
    }
    if (!r->njobs) printf("no jobs\n");
    for (uint32_t i = 0; i < r->njobs; i++) {
        const struct proto_job_status *s = &r->jobs[i];
        printf("%-24s %-10s %u/%u done, %u failed\n", s->id, s->state, s->done, s->count,
               s->failed);
        if (s->reason) printf("  %s\n", s->reason); /* why it is stalled, on one line */
        for (uint32_t k = 0; k < s->nlevels; k++) {
            const struct proto_level_status *l = &s->levels[k];
            printf("  %-8s queued %u  running %u  done %u  compute %.1f s", l->name, l->queued,
                   l->running, l->done, (double)l->compute_ms / 1000);
            if (l->ranks > 1) printf("  ranks %u", l->ranks);
            putchar('\n');
        }
    }
}

int cmd_status(int argc, char **argv)
{
    client_args a;
    int rc = parse_client_args("status", argc, argv, 0, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    client c;
    strata_err e = {0};
    proto_msg req = {.type = PROTO_STATUS, .status = {a.arg}}, reply = {0};
    rc = client_open_curve(&c, a.endpoint, &a.keys.curve, &e);
    if (!rc) rc = client_call(&c, &req, &reply, CLIENT_REPLY_MS, &e);
    if (rc) {
        rc = client_fail("status", &e);
    } else if (reply.type == PROTO_ERROR) {
        fprintf(stderr, "strata status: %s\n", reply.error.message);
        rc = CLI_EXIT_USAGE;
    } else if (reply.type == PROTO_STATUS_REPLY) {
        print_status(&reply.status_reply, a.json);
    }
    proto_msg_free(&reply);
    client_close(&c);
    return rc;
}

int cmd_watch(int argc, char **argv)
{
    client_args a;
    int rc = parse_client_args("watch", argc, argv, 1, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    client c;
    strata_err e = {0};
    rc = client_open_curve(&c, a.endpoint, &a.keys.curve, &e);
    if (!rc) rc = client_watch(&c, a.arg, stdout, NULL, NULL, &e);
    if (rc < 0) rc = client_fail("watch", &e);
    client_close(&c);
    return rc;
}

int cmd_cancel(int argc, char **argv)
{
    client_args a;
    int rc = parse_client_args("cancel", argc, argv, 1, &a);
    if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
    client c;
    strata_err e = {0};
    proto_msg req = {.type = PROTO_CANCEL, .cancel = {a.arg}}, reply = {0};
    rc = client_open_curve(&c, a.endpoint, &a.keys.curve, &e);
    if (!rc) rc = client_call(&c, &req, &reply, CLIENT_REPLY_MS, &e);
    if (rc) {
        rc = client_fail("cancel", &e);
    } else if (reply.type == PROTO_ERROR) {
        fprintf(stderr, "strata cancel: %s\n", reply.error.message);
        rc = CLI_EXIT_USAGE;
    } else {
        printf("%s cancelled\n", a.arg);
    }
    proto_msg_free(&reply);
    client_close(&c);
    return rc;
}
