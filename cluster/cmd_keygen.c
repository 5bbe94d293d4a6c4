/* `strata keygen NAME`: a CURVE key pair for a coordinator, worker or client. */
#include "cluster/cluster.h"
#include "proto/proto.h"

#include <stdio.h>
#include <string.h>

static const char keygen_help[] =
    "usage: strata keygen NAME\n\n"
    "Writes a CURVE key pair: NAME.key (the secret key, mode 0600) and NAME.pub (the public\n"
    "key), each 40 characters of Z85. Give the coordinator's NAME.pub to workers and clients\n"
    "(--server-key) and list theirs in the coordinator's curve.allow. Existing files are kept.\n";

int cmd_keygen(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(keygen_help, stdout);
        return CLI_EXIT_OK;
    }
    if (argc != 2 || argv[1][0] == '-')
        return cli_usage("keygen", "%s", "expected one argument: NAME");
    strata_err e = {0};
    int rc = proto_keygen(argv[1], &e);
    if (rc < 0) return cli_fail("keygen", rc, e.msg);
    printf("%s.key (secret) and %s.pub (public) written\n", argv[1], argv[1]);
    return CLI_EXIT_OK;
}
