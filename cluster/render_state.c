/* `strata render`'s state directory: OUT/JOB/.strata-state holds its coordinator's journal and
 * spool, so running the same render again resumes it; --fresh removes it first. */
#include "cluster/cluster.h"
#include "cluster/render.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void render_abs_path(const char *path, char *out, size_t len)
{
    char cwd[PATH_MAX];
    if (path[0] != '/' && getcwd(cwd, sizeof cwd))
        snprintf(out, len, "%s/%s", cwd, path);
    else
        snprintf(out, len, "%s", path);
}

int render_state_prepare(const char *out, const char *job, int fresh, char *state, size_t len)
{
    if (snprintf(state, len, "%s/%s/.strata-state", out, job) >= (int)len) {
        fprintf(stderr, "strata render: --out: path too long\n");
        return CLI_EXIT_USAGE;
    }
    if (fresh && access(state, F_OK) == 0 &&
        nftw(state, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "strata render: --fresh: cannot remove %s: %s\n", state, strerror(errno));
        return CLI_EXIT_RUNTIME;
    }
    return 0;
}
