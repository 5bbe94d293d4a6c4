/* The coordinator's CURVE keys from its config: its secret key and the allow list, each entry a
 * .pub file or a directory of them (docs/config.md). */
#include "cluster/config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct key_list {
    coord_key *k;
    uint32_t n, cap;
} key_list;

/* Add the key in path (admin or not). */
static int keys_add(key_list *l, const char *path, int admin, strata_err *e)
{
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? 2 * l->cap : 16;
        coord_key *k = realloc(l->k, cap * sizeof *k);
        if (!k) return err_set(e, ERR_NOMEM, "out of memory");
        l->k = k;
        l->cap = cap;
    }
    int rc = proto_key_read(path, l->k[l->n].key, e);
    if (rc < 0) return err_set(e, rc, "curve.allow: %s", e->msg);
    l->k[l->n++].admin = admin;
    return 0;
}

/* Every NAME.pub in dir. */
static int keys_add_dir(key_list *l, const char *dir, int admin, strata_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return err_set(e, ERR_INPUT, "curve.allow: %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".pub")) continue;
        char path[SPEC_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        rc = keys_add(l, path, admin, e);
    }
    closedir(d);
    return rc;
}

int coordinator_keys_load(const coordinator_config *f, char secret[PROTO_KEY_LEN + 1],
                          coord_key **allow, uint32_t *nallow, strata_err *e)
{
    key_list l = {0};
    *allow = NULL;
    *nallow = 0;
    int rc = proto_key_read(f->curve_key, secret, e);
    if (rc < 0) return err_set(e, rc, "curve.key: %s", e->msg);
    for (int i = 0; !rc && i < f->nallow; i++) {
        struct stat st;
        if (stat(f->allow[i].path, &st) == 0 && S_ISDIR(st.st_mode))
            rc = keys_add_dir(&l, f->allow[i].path, f->allow[i].admin, e);
        else
            rc = keys_add(&l, f->allow[i].path, f->allow[i].admin, e);
    }
    if (!rc && l.n == 0) rc = err_set(e, ERR_INPUT, "curve.allow: no keys: no one could connect");
    if (rc < 0) {
        free(l.k);
        return rc;
    }
    *allow = l.k;
    *nallow = l.n;
    return 0;
}
