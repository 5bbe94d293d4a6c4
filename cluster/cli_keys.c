/* The CURVE key flags of `strata worker` and the client commands (docs/design.md section 5). */
#include "cluster/client.h"
#include "cluster/cluster.h"

#include <stdlib.h>
#include <string.h>

int cli_keys_load(const char *cmd, const char *key_file, const char *server_file, cli_keys *k)
{
    memset(k, 0, sizeof *k);
    if (!key_file && !server_file) {
        key_file = getenv("STRATA_KEY");
        server_file = getenv("STRATA_SERVER_KEY");
        if (key_file && !*key_file) key_file = NULL;
        if (server_file && !*server_file) server_file = NULL;
    }
    if (!key_file && !server_file) return 0;
    if (!key_file || !server_file)
        return cli_usage(cmd, "%s", "--key and --server-key go together (CURVE needs both)");
    strata_err e = {0};
    if (proto_key_read(key_file, k->key, &e) || proto_key_read(server_file, k->server, &e))
        return cli_usage(cmd, "%s", e.msg);
    k->curve = (proto_curve){.secret_key = k->key, .server_key = k->server};
    return 0;
}
