/* strata: one binary, one subcommand per verb. */
#include "cluster/cluster.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"unet", cmd_unet, "run one UNet2DModel forward on a safetensors input"},
    {"sample", cmd_sample, "sample images from one diffusers model"},
    {"render", cmd_render, "render a job on this machine (coordinator + worker pools)"},
    {"plan", cmd_plan, "size each level's pool for a farm, from measured times"},
    {"submit", cmd_submit, "send a job file to a coordinator"},
    {"status", cmd_status, "list jobs and their per-level progress"},
    {"watch", cmd_watch, "follow one job until it ends"},
    {"cancel", cmd_cancel, "cancel a job"},
    {"bench", cmd_bench, "time the engine (UNet forward, convolutions)"},
    {"worker", cmd_worker, "serve one level of a cascade for a coordinator"},
    {"coordinator", cmd_coordinator, "serve a pipeline's jobs to its worker pools"},
    {"keygen", cmd_keygen, "write a CURVE key pair (NAME.key, NAME.pub)"},
};

static void usage(FILE *to)
{
    fprintf(to, "usage: strata COMMAND [OPTIONS]\n\n"
                "Render farm for cascaded diffusion models.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(to, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(to, "\n`strata COMMAND --help` describes a command. Exit codes: 0 success, "
                "1 runtime failure, 2 bad input or usage.\n");
}

int main(int argc, char **argv)
{
    kernels_setup_blas(argv);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("strata %s, OpenBLAS kernels: %s\n", STRATA_VERSION, kernels_blas_core());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "strata: unknown command '%s' (see strata --help)\n", argv[1]);
    return CLI_EXIT_USAGE;
}
