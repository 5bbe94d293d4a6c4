/* safetensors files: read through a read-only mapping, written float32 atomically.
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data; offsets are relative to the end of the header. */
#include "kernels/safetensors.h"
#include "common/common.h"
#include "kernels/half.h"
#include "kernels/kernels.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every dtype the format defines, so files holding other dtypes still open. */
static const struct {
    const char *name;
    st_dtype dtype;
    int size;
} st_dtypes[] = {
    {"F32", ST_DTYPE_F32, 4},    {"F16", ST_DTYPE_F16, 2},       {"BF16", ST_DTYPE_BF16, 2},
    {"F64", ST_DTYPE_F64, 8},    {"I64", ST_DTYPE_I64, 8},       {"I32", ST_DTYPE_I32, 4},
    {"BOOL", ST_DTYPE_OTHER, 1}, {"U8", ST_DTYPE_OTHER, 1},      {"I8", ST_DTYPE_OTHER, 1},
    {"I16", ST_DTYPE_OTHER, 2},  {"U16", ST_DTYPE_OTHER, 2},     {"U32", ST_DTYPE_OTHER, 4},
    {"U64", ST_DTYPE_OTHER, 8},  {"F8_E5M2", ST_DTYPE_OTHER, 1}, {"F8_E4M3", ST_DTYPE_OTHER, 1},
};
enum { ST_NDTYPES = sizeof st_dtypes / sizeof st_dtypes[0] };

/* A tensor plus what only this file needs; t comes first so st_at can hand out &entry->t. */
typedef struct st_entry {
    st_tensor t;
    int dtype_index; /* into st_dtypes */
} st_entry;

struct st_file {
    char *path;
    void *map;
    size_t size;
    st_entry *entries; /* sorted by name, for bsearch */
    int count;
};

/* "[4, 3]" into buf. */
static const char *format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
    return buf;
}

/* Index into st_dtypes of the dtype called name, or -1. */
static int dtype_lookup(const char *name)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return i;
    return -1;
}

/* Product of the dims, or -1 when it overflows int64. */
static int64_t shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

/* Parse the "shape" array of tensor name into t. */
static int parse_shape(const st_file_t *f, const char *name, json_t *js, st_tensor *t,
                       strata_err *e)
{
    if (!js) return err_set(e, ERR_INPUT, "%s: tensor '%s': missing shape", f->path, name);
    if (!json_is_array(js))
        return err_set(e, ERR_INPUT, "%s: tensor '%s': shape: expected an array of ints", f->path,
                       name);
    if (json_array_size(js) > ST_MAX_DIMS)
        return err_set(e, ERR_INPUT, "%s: tensor '%s': shape has %zu dims, at most %d allowed",
                       f->path, name, json_array_size(js), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(e, ERR_INPUT,
                           "%s: tensor '%s': shape: expected an array of non-negative ints",
                           f->path, name);
        t->shape[i] = json_integer_value(d);
    }
    return ERR_OK;
}

/* Parse "data_offsets" into [begin, end) and check it against the data size and the shape. */
static int parse_offsets(const st_file_t *f, const char *name, json_t *js, const uint8_t *data,
                         size_t data_size, st_entry *en, strata_err *e)
{
    st_tensor *t = &en->t;
    json_t *jb = json_array_get(js, 0), *je = json_array_get(js, 1);
    if (!js) return err_set(e, ERR_INPUT, "%s: tensor '%s': missing data_offsets", f->path, name);
    if (!json_is_array(js) || json_array_size(js) != 2 || !json_is_integer(jb) ||
        !json_is_integer(je) || json_integer_value(jb) < 0 || json_integer_value(je) < 0)
        return err_set(e, ERR_INPUT,
                       "%s: tensor '%s': data_offsets: expected [begin, end] non-negative ints",
                       f->path, name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end > data_size && begin <= end)
        return err_set(e, ERR_INPUT,
                       "%s: truncated: tensor '%s' ends at data byte %" PRIu64
                       " but the data has %zu bytes",
                       f->path, name, end, data_size);
    if (begin > end)
        return err_set(e, ERR_INPUT,
                       "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] out of range",
                       f->path, name, begin, end);
    int64_t numel = shape_numel(t->ndim, t->shape);
    int size = st_dtypes[en->dtype_index].size;
    if (numel < 0 || (uint64_t)numel > (end - begin) / (uint64_t)size ||
        (uint64_t)numel * (uint64_t)size != end - begin) {
        char sh[256];
        return err_set(e, ERR_INPUT,
                       "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                       "] do not match shape %s of %s",
                       f->path, name, begin, end, format_shape(sh, sizeof sh, t->ndim, t->shape),
                       st_dtypes[en->dtype_index].name);
    }
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    return ERR_OK;
}

/* Parse one header entry {"dtype", "shape", "data_offsets"} into en. */
static int parse_entry(const st_file_t *f, const char *name, json_t *js, const uint8_t *data,
                       size_t data_size, st_entry *en, strata_err *e)
{
    if (!json_is_object(js))
        return err_set(e, ERR_INPUT, "%s: tensor '%s': expected an object", f->path, name);
    json_t *jd = json_object_get(js, "dtype");
    if (!jd) return err_set(e, ERR_INPUT, "%s: tensor '%s': missing dtype", f->path, name);
    if (!json_is_string(jd))
        return err_set(e, ERR_INPUT, "%s: tensor '%s': dtype: expected a string", f->path, name);
    en->dtype_index = dtype_lookup(json_string_value(jd));
    if (en->dtype_index < 0)
        return err_set(e, ERR_INPUT, "%s: tensor '%s': unknown dtype '%s'", f->path, name,
                       json_string_value(jd));
    en->t.dtype = st_dtypes[en->dtype_index].dtype;
    int rc = parse_shape(f, name, json_object_get(js, "shape"), &en->t, e);
    if (rc) return rc;
    return parse_offsets(f, name, json_object_get(js, "data_offsets"), data, data_size, en, e);
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

/* Fill f->entries from the parsed header object; data is where the tensor bytes start. */
static int parse_entries(st_file_t *f, json_t *root, const uint8_t *data, size_t data_size,
                         strata_err *e)
{
    const char *name;
    json_t *value;
    f->entries = calloc(json_object_size(root) + 1, sizeof *f->entries);
    if (!f->entries) return err_set(e, ERR_NOMEM, "%s: out of memory", f->path);
    json_object_foreach(root, name, value)
    {
        if (strcmp(name, "__metadata__") == 0) continue;
        st_entry *en = &f->entries[f->count];
        int rc = parse_entry(f, name, value, data, data_size, en, e);
        if (rc) return rc;
        en->t.name = strdup(name);
        if (!en->t.name) return err_set(e, ERR_NOMEM, "%s: out of memory", f->path);
        f->count++;
    }
    qsort(f->entries, (size_t)f->count, sizeof *f->entries, entry_cmp);
    return ERR_OK;
}

/* Map the whole file read-only into f->map. */
static int map_file(st_file_t *f, strata_err *e)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(e, ERR_INPUT, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(e, ERR_INPUT, "%s: not a regular file", f->path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return err_set(e, ERR_INPUT,
                       "%s: truncated: %zu bytes, shorter than the 8-byte header "
                       "length",
                       f->path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return err_set(e, ERR_INPUT, "%s: cannot map: %s", f->path, strerror(errno));
    }
    return ERR_OK;
}

/* Read the header length and parse the JSON header that follows it. */
static int parse_header(st_file_t *f, strata_err *e)
{
    const uint8_t *p = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | p[i];
    if (n > f->size - 8)
        return err_set(e, ERR_INPUT,
                       "%s: truncated: header says %" PRIu64 " bytes, file has %zu after the "
                       "8-byte length",
                       f->path, n, f->size - 8);
    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(e, ERR_INPUT, "%s: header: invalid JSON at offset %d: %s", f->path,
                       je.position, je.text);
    int rc = json_is_object(root)
                 ? parse_entries(f, root, p + 8 + n, f->size - 8 - (size_t)n, e)
                 : err_set(e, ERR_INPUT, "%s: header: expected a JSON object", f->path);
    json_decref(root);
    return rc;
}

int st_open(const char *path, st_file_t **out, strata_err *e)
{
    *out = NULL;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return err_set(e, ERR_NOMEM, "%s: out of memory", path);
    }
    int rc = map_file(f, e);
    if (!rc) rc = parse_header(f, e);
    if (rc) {
        st_close(f);
        return rc;
    }
    *out = f;
    return ERR_OK;
}

void st_close(st_file_t *f)
{
    if (!f) return;
    for (int i = 0; i < f->count; i++)
        free((char *)f->entries[i].t.name);
    free(f->entries);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

const char *st_path(const st_file_t *f)
{
    return f->path;
}

int st_count(const st_file_t *f)
{
    return f->count;
}

/* Tensors come in name order, whatever their order in the header. */
const st_tensor *st_at(const st_file_t *f, int i)
{
    assert(i >= 0 && i < f->count);
    return &f->entries[i].t;
}

const st_tensor *st_find(const st_file_t *f, const char *name)
{
    st_entry key = {.t = {.name = name}};
    const st_entry *en = bsearch(&key, f->entries, (size_t)f->count, sizeof key, entry_cmp);
    return en ? &en->t : NULL;
}

int64_t st_numel(const st_tensor *t)
{
    return shape_numel(t->ndim, t->shape);
}

/* The element loops below copy through memcpy: the mapping gives no alignment guarantee
 * (the header length need not be a multiple of the element size). */
#define ST_CONVERT(TYPE, EXPR)                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
        TYPE v;                                                                                    \
        memcpy(&v, src + i * (int64_t)sizeof v, sizeof v);                                         \
        dst[i] = EXPR;                                                                             \
    }

void st_to_f32(const st_tensor *t, float *dst)
{
    const uint8_t *src = t->data;
    int64_t n = st_numel(t);
    switch (t->dtype) {
    case ST_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof *dst);
        break;
    case ST_DTYPE_F16:
        ST_CONVERT(uint16_t, f16_to_f32(v));
        break;
    case ST_DTYPE_BF16:
        ST_CONVERT(uint16_t, bf16_to_f32(v));
        break;
    case ST_DTYPE_F64:
        ST_CONVERT(double, (float)v);
        break;
    case ST_DTYPE_I64:
        ST_CONVERT(int64_t, (float)v);
        break;
    case ST_DTYPE_I32:
        ST_CONVERT(int32_t, (float)v);
        break;
    case ST_DTYPE_OTHER:
        assert(!"st_to_f32: dtype has no float conversion");
        memset(dst, 0, (size_t)n * sizeof *dst);
        break;
    }
}

int st_read_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape, float *dst,
                strata_err *e)
{
    const st_tensor *t = st_find(f, name);
    if (!t) return err_set(e, ERR_INPUT, "%s: tensor '%s': missing", f->path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char want[256], got[256];
        return err_set(e, ERR_INPUT, "%s: tensor '%s': expected shape %s, got %s", f->path, name,
                       format_shape(want, sizeof want, ndim, shape),
                       format_shape(got, sizeof got, t->ndim, t->shape));
    }
    if (t->dtype == ST_DTYPE_OTHER)
        return err_set(e, ERR_INPUT, "%s: tensor '%s': dtype %s cannot be read as float32", f->path,
                       name, st_dtypes[((const st_entry *)t)->dtype_index].name);
    st_to_f32(t, dst);
    return ERR_OK;
}

/* ---------------------------------------------------------------- writing */

static int out_cmp(const void *a, const void *b)
{
    return strcmp((*(const st_out *const *)a)->name, (*(const st_out *const *)b)->name);
}

/* Check names, dims and sizes of the tensors to write; sorted is sorted by name. */
static int check_outs(const char *path, const st_out *const *sorted, int count, strata_err *e)
{
    for (int i = 0; i < count; i++) {
        const st_out *o = sorted[i];
        if (o->ndim < 0 || o->ndim > ST_MAX_DIMS)
            return err_set(e, ERR_INPUT, "%s: tensor '%s': rank %d out of range", path, o->name,
                           o->ndim);
        if (i > 0 && strcmp(o->name, sorted[i - 1]->name) == 0)
            return err_set(e, ERR_INPUT, "%s: tensor '%s': duplicate name", path, o->name);
        for (int d = 0; d < o->ndim; d++)
            if (o->shape[d] < 0)
                return err_set(e, ERR_INPUT, "%s: tensor '%s': negative dim", path, o->name);
        int64_t numel = shape_numel(o->ndim, o->shape);
        if (numel < 0 || numel > INT64_MAX / 4)
            return err_set(e, ERR_INPUT, "%s: tensor '%s': too large", path, o->name);
    }
    return ERR_OK;
}

/* One header entry {"dtype":"F32","shape":[...],"data_offsets":[begin,end]}, fields in the
 * order the Python library writes them. */
static json_t *header_entry(const st_out *o, int64_t begin, int64_t end)
{
    json_t *shape = json_array(), *offsets = json_array(), *entry = json_object();
    for (int d = 0; d < o->ndim; d++)
        json_array_append_new(shape, json_integer(o->shape[d]));
    json_array_append_new(offsets, json_integer(begin));
    json_array_append_new(offsets, json_integer(end));
    json_object_set_new(entry, "dtype", json_string("F32"));
    json_object_set_new(entry, "shape", shape);
    json_object_set_new(entry, "data_offsets", offsets);
    return entry;
}

/* The JSON header for the sorted tensors, laid out back to back in that order; NULL when out
 * of memory. jansson keeps insertion order, so keys come out sorted by name. */
static char *header_json(const st_out *const *sorted, int count)
{
    json_t *root = json_object();
    int64_t offset = 0;
    for (int i = 0; i < count; i++) {
        int64_t nbytes = shape_numel(sorted[i]->ndim, sorted[i]->shape) * 4;
        json_object_set_new(root, sorted[i]->name,
                            header_entry(sorted[i], offset, offset + nbytes));
        offset += nbytes;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

/* Write length + header (space padded to a multiple of 8, as the Python library does) +
 * the data of each tensor, atomically. */
static int write_file(const char *path, const char *json, const st_out *const *sorted, int count,
                      strata_err *e)
{
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    uint8_t *head = malloc(8 + padded);
    struct iovec *parts = malloc(((size_t)count + 1) * sizeof *parts);
    int rc = ERR_OK;
    if (!head || !parts) {
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(head + 8, json, jlen);
    memset(head + 8 + jlen, ' ', padded - jlen);
    parts[0] = (struct iovec){head, 8 + padded};
    for (int i = 0; i < count; i++) {
        size_t nbytes = (size_t)shape_numel(sorted[i]->ndim, sorted[i]->shape) * sizeof(float);
        parts[i + 1] = (struct iovec){(void *)sorted[i]->data, nbytes};
    }
    rc = file_write_atomic(path, parts, count + 1, 1, e);
done:
    free(head);
    free(parts);
    return rc;
}

int st_write_f32(const char *path, const st_out *tensors, int count, strata_err *e)
{
    const st_out **sorted = malloc(((size_t)count + 1) * sizeof *sorted);
    if (!sorted) return err_set(e, ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < count; i++) {
        sorted[i] = &tensors[i];
        if (!tensors[i].name) {
            free(sorted);
            return err_set(e, ERR_INPUT, "%s: tensor %d has no name", path, i);
        }
    }
    qsort(sorted, (size_t)count, sizeof *sorted, out_cmp);
    int rc = check_outs(path, sorted, count, e);
    char *json = NULL;
    if (!rc && !(json = header_json(sorted, count)))
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", path);
    if (!rc) rc = write_file(path, json, sorted, count, e);
    free(json);
    free(sorted);
    return rc;
}

void st_release(const st_file_t *f, const st_tensor *t)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)(page - 1);
    (void)f;
    /* read-only private file mapping: dropped pages are simply read again if touched */
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
