/* The journal of a state directory (see journal.h): records encoded as fixed little-endian
 * fields plus two strings, checksummed with zlib's crc32, written in groups. */
#include "coordinator/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define JOURNAL_MAGIC "STRATAJ1"
enum {
    JOURNAL_MAGIC_LEN = 8,
    REC_HEAD = 8,                      /* u32 len, u32 crc */
    REC_FIXED = 4 + 4 * 8 + 8 + 2 + 4, /* the fixed fields of a payload */
    REC_MAX = 64 << 20,                /* a spec text is far smaller: a bigger len is torn */
    JOB_MAX = 256,                     /* longest job id kept */
};

struct coord_journal {
    char *path; /* NULL: an in-memory buffer (coord_journal_new_buffer) */
    int fd;
    uint64_t size; /* bytes in the file */
    unsigned char *buf;
    size_t len, cap;
};

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc_of(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* ---------------------------------------------------------------- encoding */

/* The payload of r into p (REC_FIXED + strings bytes). */
static void encode(const coord_rec *r, unsigned char *p, size_t joblen)
{
    p[0] = r->type;
    p[1] = r->level;
    p[2] = r->ok;
    p[3] = r->state;
    uint32_t f[8] = {r->image,   r->arrival, r->done,    r->failed,
                     r->ref.seg, r->ref.len, r->ref.crc, r->ref.side};
    for (int i = 0; i < 8; i++)
        put32(p + 4 + 4 * i, f[i]);
    put64(p + 36, r->ref.off);
    p[44] = (unsigned char)joblen;
    p[45] = (unsigned char)(joblen >> 8);
    put32(p + 46, r->textlen);
    memcpy(p + REC_FIXED, r->job, joblen);
    if (r->textlen) memcpy(p + REC_FIXED + joblen, r->text, r->textlen);
}

/* Decode payload p (n bytes) into r, job and text copied NUL-terminated into job (JOB_MAX) and
 * *text (malloc'd). -1 when the lengths do not add up. */
static int decode(const unsigned char *p, size_t n, coord_rec *r, char *job, char **text)
{
    if (n < REC_FIXED) return -1;
    size_t joblen = (size_t)p[44] | (size_t)p[45] << 8;
    uint32_t textlen = get32(p + 46);
    if (joblen >= JOB_MAX || REC_FIXED + joblen + textlen != n) return -1;
    memset(r, 0, sizeof *r);
    r->type = p[0];
    r->level = p[1];
    r->ok = p[2];
    r->state = p[3];
    uint32_t *f[8] = {&r->image,   &r->arrival, &r->done,    &r->failed,
                      &r->ref.seg, &r->ref.len, &r->ref.crc, &r->ref.side};
    for (int i = 0; i < 8; i++)
        *f[i] = get32(p + 4 + 4 * i);
    r->ref.off = get64(p + 36);
    memcpy(job, p + REC_FIXED, joblen);
    job[joblen] = 0;
    *text = malloc((size_t)textlen + 1);
    if (!*text) return -1;
    memcpy(*text, p + REC_FIXED + joblen, textlen);
    (*text)[textlen] = 0;
    r->job = job;
    r->text = *text;
    r->textlen = textlen;
    return 0;
}

/* ---------------------------------------------------------------- reading */

/* The whole file into *data (malloc'd); 0 with *n = 0 when it does not exist. */
static int slurp(const char *path, unsigned char **data, size_t *n, strata_err *e)
{
    *data = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : err_set(e, ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !(*data = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return err_set(e, ERR_IO, "%s: cannot read", path);
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, *data + got, (size_t)st.st_size - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    *n = got;
    return 0;
}

/* Walk the records of data (n bytes, after the magic); the end of the last intact one. */
static int walk(const unsigned char *data, size_t n, coord_rec_fn fn, void *ctx, size_t *end,
                strata_err *e)
{
    size_t at = JOURNAL_MAGIC_LEN;
    char job[JOB_MAX];
    while (n - at >= REC_HEAD) {
        uint32_t len = get32(data + at), crc = get32(data + at + 4);
        if (len > REC_MAX || len > n - at - REC_HEAD) break;
        const unsigned char *p = data + at + REC_HEAD;
        if (crc_of(p, len) != crc) break;
        coord_rec r;
        char *text = NULL;
        if (decode(p, len, &r, job, &text) < 0) {
            free(text);
            break;
        }
        int rc = fn(ctx, &r);
        free(text);
        if (rc < 0) return rc;
        at += REC_HEAD + len;
    }
    *end = at;
    (void)e;
    return 0;
}

int coord_journal_read(const char *path, coord_rec_fn fn, void *ctx, uint64_t *valid_end,
                       uint64_t *dropped, strata_err *e)
{
    unsigned char *data;
    size_t n, end = 0;
    *valid_end = *dropped = 0;
    int rc = slurp(path, &data, &n, e);
    if (rc < 0 || n == 0) {
        free(data);
        return rc;
    }
    if (n < JOURNAL_MAGIC_LEN || memcmp(data, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN)) {
        /* a file cut inside its magic is a torn first write; anything else is not ours */
        int torn = n < JOURNAL_MAGIC_LEN && !memcmp(data, JOURNAL_MAGIC, n);
        free(data);
        if (!torn) return err_set(e, ERR_INPUT, "%s: not a strata journal", path);
        *dropped = n;
        return 0;
    }
    rc = walk(data, n, fn, ctx, &end, e);
    free(data);
    *valid_end = end;
    *dropped = n - end;
    return rc;
}

/* ---------------------------------------------------------------- writing */

static int journal_alloc(const char *path, coord_journal_t **out)
{
    coord_journal_t *j = calloc(1, sizeof *j);
    if (!j || (path && !(j->path = strdup(path)))) {
        free(j);
        return -1;
    }
    j->fd = -1;
    *out = j;
    return 0;
}

int coord_journal_new_buffer(coord_journal_t **out)
{
    return journal_alloc(NULL, out);
}

/* Write all n bytes at the file's end. 0, or -1 with errno. */
static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int coord_journal_open(const char *path, uint64_t valid_end, coord_journal_t **out, strata_err *e)
{
    coord_journal_t *j;
    *out = NULL;
    if (journal_alloc(path, &j) < 0) return err_set(e, ERR_NOMEM, "out of memory");
    j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int bad = j->fd < 0;
    if (!bad && valid_end < JOURNAL_MAGIC_LEN) /* new, or torn inside its magic */
        bad = ftruncate(j->fd, 0) < 0 ||
              write_all(j->fd, (const unsigned char *)JOURNAL_MAGIC, JOURNAL_MAGIC_LEN) < 0 ||
              fsync(j->fd) < 0;
    else if (!bad)
        bad = ftruncate(j->fd, (off_t)valid_end) < 0 || fsync(j->fd) < 0;
    if (bad) {
        err_set(e, ERR_IO, "%s: cannot open the journal: %s", path, strerror(errno));
        coord_journal_close(&j);
        return ERR_IO;
    }
    j->size = valid_end < JOURNAL_MAGIC_LEN ? JOURNAL_MAGIC_LEN : valid_end;
    lseek(j->fd, (off_t)j->size, SEEK_SET);
    *out = j;
    return 0;
}

void coord_journal_close(coord_journal_t **jp)
{
    coord_journal_t *j = jp ? *jp : NULL;
    if (!j) return;
    if (j->fd >= 0) {
        if (j->len) coord_journal_sync(j, NULL);
        close(j->fd);
    }
    free(j->path);
    free(j->buf);
    free(j);
    *jp = NULL;
}

int coord_journal_append(coord_journal_t *j, const coord_rec *r)
{
    size_t joblen = strnlen(r->job, JOB_MAX - 1);
    size_t n = REC_HEAD + REC_FIXED + joblen + r->textlen;
    if (j->len + n > j->cap) {
        size_t cap = j->cap ? j->cap : 4096;
        while (cap < j->len + n)
            cap *= 2;
        unsigned char *b = realloc(j->buf, cap);
        if (!b) return -1;
        j->buf = b;
        j->cap = cap;
    }
    unsigned char *p = j->buf + j->len;
    encode(r, p + REC_HEAD, joblen);
    put32(p, (uint32_t)(n - REC_HEAD));
    put32(p + 4, crc_of(p + REC_HEAD, n - REC_HEAD));
    j->len += n;
    return 0;
}

size_t coord_journal_mark(const coord_journal_t *j)
{
    return j->len;
}

void coord_journal_rewind(coord_journal_t *j, size_t mark)
{
    if (mark < j->len) j->len = mark;
}

int coord_journal_dirty(const coord_journal_t *j)
{
    return j->len > 0;
}

uint64_t coord_journal_size(const coord_journal_t *j)
{
    return j->size;
}

int coord_journal_sync(coord_journal_t *j, strata_err *e)
{
    if (!j->len) return 0;
    if (write_all(j->fd, j->buf, j->len) < 0 || fdatasync(j->fd) < 0) {
        int err = errno;
        /* no half record may stay in the middle of the file: later records would follow it */
        if (ftruncate(j->fd, (off_t)j->size) == 0) lseek(j->fd, (off_t)j->size, SEEK_SET);
        return err_set(e, ERR_IO, "%s: cannot write the journal: %s", j->path, strerror(err));
    }
    j->size += j->len;
    j->len = 0;
    return 0;
}

int coord_journal_replace(coord_journal_t *j, coord_journal_t **fresh, strata_err *e)
{
    coord_journal_t *f = *fresh;
    struct iovec parts[2] = {{JOURNAL_MAGIC, JOURNAL_MAGIC_LEN}, {f->buf, f->len}};
    int rc = file_write_atomic(j->path, parts, 2, 1, e);
    if (rc < 0) return rc;
    int fd = open(j->path, O_RDWR | O_APPEND | O_CLOEXEC);
    if (fd < 0) return err_set(e, ERR_IO, "%s: cannot reopen: %s", j->path, strerror(errno));
    close(j->fd);
    j->fd = fd;
    j->size = JOURNAL_MAGIC_LEN + f->len;
    j->len = 0; /* what was buffered is in the new file's state, or superseded by it */
    coord_journal_close(fresh);
    return 0;
}
