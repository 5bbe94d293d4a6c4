/* Who may reach the coordinator and where its jobs may write (docs/design.md sections 5 and 6).
 * With CURVE keys every connection passes the ZAP handler's allow list, and a job belongs to
 * the key that submitted it; without keys the sockets bind loopback only unless the operator
 * says insecure. Every path a client names lies under the output root: ".." is refused, and
 * what exists of a path is resolved (symlinks followed) and must stay inside the root. */
#include "coordinator/coord_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 1 when ep can only be reached from this host: ipc, inproc, or tcp on 127.x, ::1 or
 * localhost (a port or "*" after it). */
static int endpoint_is_local(const char *ep)
{
    static const char *const local[] = {"ipc://", "inproc://", "tcp://127.",
                                        "tcp://[::1]:", "tcp://localhost:"};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        if (!strncmp(ep, local[i], strlen(local[i]))) return 1;
    return 0;
}

/* Endpoints other than loopback need keys or insecure. */
static int access_endpoints(coord_t *c, strata_err *e)
{
    const char *eps[2] = {c->o.worker_endpoint, c->o.client_endpoint};
    for (int i = 0; i < 2; i++) {
        if (c->o.curve_secret || endpoint_is_local(eps[i])) continue;
        if (!c->o.insecure)
            return err_set(e, ERR_INPUT,
                           "%s: %s is not loopback and no curve keys are set: anyone who reaches "
                           "it could join; set curve (strata keygen) or insecure: true",
                           i ? "clients" : "workers", eps[i]);
        coord_log(c, 1, "INSECURE: %s endpoint %s without keys: anyone who reaches it can join",
                  i ? "client" : "worker", eps[i]);
    }
    return 0;
}

int coord_access_start(coord_t *c, strata_err *e)
{
    int rc = access_endpoints(c, e);
    if (rc < 0 || !c->o.curve_secret) return rc;
    uint32_t n = c->o.nallow;
    c->allow = calloc(n ? n : 1, sizeof *c->allow);
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!c->allow || !keys) {
        free(keys);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        c->allow[i] = c->o.allow[i];
        keys[i] = c->allow[i].key;
    }
    c->nallow = n;
    c->o.allow = c->allow;
    strata_err ze = {0};
    rc = proto_zap_new(c->ctx, keys, n, &c->zap, &ze);
    free(keys);
    if (rc < 0) return err_set(e, rc == ERR_ARG ? ERR_INPUT : ERR_RUNTIME, "curve: %s", ze.msg);
    coord_log(c, 0, "CURVE on: %u keys allowed", n);
    return 0;
}

void coord_access_stop(coord_t *c)
{
    proto_zap_destroy(&c->zap);
    free(c->allow);
    c->allow = NULL;
    c->nallow = 0;
}

void coord_access_models(coord_t *c)
{
    for (int l = 0; l < c->pipe.nlevels; l++) {
        strata_err e = {0};
        if (model_hash_dir(c->pipe.levels[l].model, c->model_hash[l], &e) == 0) continue;
        c->model_hash[l][0] = 0;
        struct stat st; /* a model directory that is not here at all: no news */
        coord_log(c, stat(c->pipe.levels[l].model, &st) == 0,
                  "level %s: workers' models not checked: %s", c->pipe.levels[l].name, e.msg);
    }
}

int coord_access_may_cancel(const coord_t *c, const char *user, const char *owner)
{
    if (!strcmp(user, owner)) return 1;
    for (uint32_t i = 0; i < c->nallow; i++)
        if (c->allow[i].admin && !strcmp(c->allow[i].key, user)) return 1;
    return 0;
}

/* ---------------------------------------------------------------- the output root */

/* mkdir -p of path (an absolute path). */
static int mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int rc = mkdir(path, 0755);
        *p = '/';
        if (rc != 0 && errno != EEXIST) return -1;
    }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int coord_root_init(coord_t *c, strata_err *e)
{
    char want[PATH_MAX];
    const char *root = c->o.out_root && *c->o.out_root ? c->o.out_root : ".";
    if (root[0] == '/')
        snprintf(want, sizeof want, "%s", root);
    else if (!getcwd(want, sizeof want) || strlen(want) + strlen(root) + 2 > sizeof want ||
             !strcat(strcat(want, "/"), root))
        return err_set(e, ERR_INPUT, "out_root: %s: path too long", root);
    if (mkdirs(want) < 0 || !realpath(want, c->root))
        return err_set(e, ERR_INPUT, "out_root: %s: %s", root, strerror(errno));
    c->o.out_root = c->root;
    return 0;
}

/* 1 when path (resolved) is the root or inside it. */
static int under_root(const coord_t *c, const char *path)
{
    size_t n = strlen(c->root);
    if (n == 1) return 1; /* the root is / */
    return !strncmp(path, c->root, n) && (path[n] == 0 || path[n] == '/');
}

/* 1 when path has a ".." component. */
static int has_dotdot(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")); p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) return 1;
    return 0;
}

/* Resolve the longest existing prefix of abs (symlinks followed) and append the rest into out.
 * A dangling symlink is refused: what is made under it would land wherever it points. */
static int resolve_prefix(const char *abs, char *out, size_t len)
{
    char pre[PATH_MAX], real[PATH_MAX];
    struct stat st;
    snprintf(pre, sizeof pre, "%s", abs);
    size_t cut = strlen(pre);
    while (!realpath(pre, real)) {
        if (errno != ENOENT || lstat(pre, &st) == 0) return -1;
        char *slash = strrchr(pre, '/');
        if (!slash) return -1;
        cut = (size_t)(slash - pre);
        if (cut == 0) {
            snprintf(real, sizeof real, "/");
            break;
        }
        *slash = 0;
    }
    return snprintf(out, len, "%s%s", strcmp(real, "/") ? real : "", abs + cut) >= (int)len ? -1
                                                                                            : 0;
}

int coord_root_path(const coord_t *c, const char *field, const char *path, int make, char *out,
                    size_t len, strata_err *e)
{
    char abs[PATH_MAX], given[PATH_MAX];
    snprintf(given, sizeof given, "%s", path); /* out may be path */
    path = given;
    if (has_dotdot(path))
        return err_set(e, ERR_INPUT,
                       "SUBMIT: %s: %s has a '..': paths stay inside the output "
                       "root %s",
                       field, path, c->root);
    int n = path[0] == '/' ? snprintf(abs, sizeof abs, "%s", path)
                           : snprintf(abs, sizeof abs, "%s/%s", c->root, path);
    if (n >= (int)sizeof abs || resolve_prefix(abs, out, len) < 0)
        return err_set(e, ERR_INPUT, "SUBMIT: %s: %s: cannot resolve it", field, path);
    if (!under_root(c, out))
        return err_set(e, ERR_INPUT, "SUBMIT: %s: %s is outside the output root %s", field, path,
                       c->root);
    if (make && mkdirs(out) < 0)
        return err_set(e, ERR_INPUT, "SUBMIT: %s: %s: %s", field, out, strerror(errno));
    return 0;
}

int coord_job_paths(const coord_t *c, coord_job *j, strata_err *e)
{
    char out[PATH_MAX];
    int rc = coord_root_path(c, "out", j->spec.out, 1, out, sizeof out, e);
    if (rc < 0) return rc;
    if (snprintf(j->dir, sizeof j->dir, "%s/%s", out, j->id) >= (int)sizeof j->dir)
        return err_set(e, ERR_INPUT, "SUBMIT: out: path too long");
    if (!j->spec.init_images[0]) return 0;
    return coord_root_path(c, "init_images", j->spec.init_images, 0, j->spec.init_images,
                           sizeof j->spec.init_images, e);
}
