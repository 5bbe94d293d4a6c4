/* The spool of a state directory (see spool.h): append-only segment files with live counts. */
#include "coordinator/spool.h"
#include "coordinator/grow.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

typedef struct spool_seg {
    uint32_t seg;
    uint64_t live; /* refs in it still needed */
} spool_seg;

struct coord_spool {
    char dir[4096];
    spool_seg *segs; /* every segment file on disk */
    uint32_t nsegs, capsegs;
    uint32_t cur; /* the segment appended to; 0: none yet */
    int fd;
    uint64_t size;
    int dirty;
    uint64_t live;
};

static void seg_path(const coord_spool_t *s, uint32_t seg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%08u.seg", s->dir, seg);
}

static spool_seg *seg_find(coord_spool_t *s, uint32_t seg)
{
    for (uint32_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].seg == seg) return &s->segs[i];
    return NULL;
}

static int seg_add(coord_spool_t *s, uint32_t seg)
{
    if (coord_grow(&s->segs, &s->capsegs, s->nsegs + 1, sizeof *s->segs)) return -1;
    s->segs[s->nsegs++] = (spool_seg){.seg = seg};
    return 0;
}

/* Delete segment i (not the current one) and forget it. */
static void seg_remove(coord_spool_t *s, uint32_t i)
{
    char path[4200];
    seg_path(s, s->segs[i].seg, path, sizeof path);
    unlink(path);
    s->segs[i] = s->segs[--s->nsegs];
}

int coord_spool_open(const char *dir, coord_spool_t **out, strata_err *e)
{
    *out = NULL;
    coord_spool_t *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ERR_NOMEM, "out of memory");
    s->fd = -1;
    snprintf(s->dir, sizeof s->dir, "%s/spool", dir);
    if (mkdir(s->dir, 0755) < 0 && errno != EEXIST) {
        err_set(e, ERR_IO, "%s: cannot create: %s", s->dir, strerror(errno));
        free(s);
        return ERR_IO;
    }
    DIR *d = opendir(s->dir);
    if (!d) {
        err_set(e, ERR_IO, "%s: cannot read: %s", s->dir, strerror(errno));
        free(s);
        return ERR_IO;
    }
    for (struct dirent *de; (de = readdir(d));) {
        unsigned seg;
        char tail[8];
        if (sscanf(de->d_name, "%8u.%7s", &seg, tail) == 2 && !strcmp(tail, "seg") && seg &&
            seg_add(s, seg) < 0)
            break;
    }
    closedir(d);
    *out = s;
    return 0;
}

void coord_spool_close(coord_spool_t **sp)
{
    coord_spool_t *s = sp ? *sp : NULL;
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->segs);
    free(s);
    *sp = NULL;
}

void coord_spool_hold(coord_spool_t *s, const coord_spool_ref *ref)
{
    spool_seg *g = ref->seg ? seg_find(s, ref->seg) : NULL;
    if (!g) return;
    g->live++;
    s->live++;
}

void coord_spool_start(coord_spool_t *s)
{
    for (uint32_t i = 0; i < s->nsegs;)
        if (!s->segs[i].live)
            seg_remove(s, i);
        else
            i++;
}

/* Close the current segment (synced), deleting it when nothing in it is live. */
static void seg_close_current(coord_spool_t *s)
{
    if (s->fd < 0) return;
    if (s->dirty) fdatasync(s->fd);
    close(s->fd);
    s->fd = -1;
    s->dirty = 0;
    uint32_t cur = s->cur;
    s->cur = 0;
    for (uint32_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].seg == cur && !s->segs[i].live) seg_remove(s, i);
}

/* A new current segment after every one on disk. */
static int seg_open_next(coord_spool_t *s, strata_err *e)
{
    uint32_t next = 1;
    for (uint32_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].seg >= next) next = s->segs[i].seg + 1;
    char path[4200];
    seg_path(s, next, path, sizeof path);
    s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) return err_set(e, ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (seg_add(s, next) < 0) {
        close(s->fd);
        s->fd = -1;
        unlink(path);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    s->cur = next;
    s->size = 0;
    return 0;
}

int coord_spool_put(coord_spool_t *s, const uint8_t *data, size_t n, uint32_t side,
                    coord_spool_ref *ref, strata_err *e)
{
    if (s->fd >= 0 && s->size > 0 && s->size + n > COORD_SPOOL_SEGMENT) seg_close_current(s);
    int rc = s->fd < 0 ? seg_open_next(s, e) : 0;
    if (rc < 0) return rc;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(s->fd, data + done, n - done, (off_t)(s->size + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            /* the range is never named: the next put overwrites it */
            return err_set(e, ERR_IO, "%s/%08u.seg: cannot write: %s", s->dir, s->cur,
                           k < 0 ? strerror(errno) : "short write");
        }
        done += (size_t)k;
    }
    *ref = (coord_spool_ref){.seg = s->cur,
                             .len = (uint32_t)n,
                             .crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)n),
                             .off = s->size,
                             .side = side};
    s->size += n;
    s->dirty = 1;
    seg_find(s, s->cur)->live++;
    s->live++;
    return 0;
}

int coord_spool_get(coord_spool_t *s, const coord_spool_ref *ref, uint8_t **data, strata_err *e)
{
    char path[4200];
    seg_path(s, ref->seg, path, sizeof path);
    *data = NULL;
    int fd = ref->seg == s->cur ? s->fd : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(e, ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = malloc(ref->len ? ref->len : 1);
    ssize_t k = buf ? pread(fd, buf, ref->len, (off_t)ref->off) : -1;
    if (fd != s->fd) close(fd);
    if (k != (ssize_t)ref->len ||
        (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)ref->len) != ref->crc) {
        free(buf);
        return err_set(e, ERR_IO, "%s: bytes %llu+%u missing or damaged", path,
                       (unsigned long long)ref->off, ref->len);
    }
    *data = buf;
    return 0;
}

void coord_spool_drop(coord_spool_t *s, const coord_spool_ref *ref)
{
    spool_seg *g = ref->seg ? seg_find(s, ref->seg) : NULL;
    if (!g || !g->live) return;
    g->live--;
    s->live--;
    if (!g->live && g->seg != s->cur) seg_remove(s, (uint32_t)(g - s->segs));
}

int coord_spool_sync(coord_spool_t *s, strata_err *e)
{
    if (!s->dirty) return 0;
    if (fdatasync(s->fd) < 0)
        return err_set(e, ERR_IO, "%s/%08u.seg: cannot sync: %s", s->dir, s->cur, strerror(errno));
    s->dirty = 0;
    return 0;
}

uint64_t coord_spool_live(const coord_spool_t *s)
{
    return s->live;
}

uint32_t coord_spool_files(const coord_spool_t *s)
{
    return s->nsegs;
}
