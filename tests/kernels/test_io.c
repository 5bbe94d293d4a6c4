/* safetensors, half-float and PNG I/O: round trips, files from the Python safetensors library,
 * and corrupt files, which must fail with ERR_INPUT and a message naming file and tensor. */
#include "kernels/half.h"
#include "kernels/kernels.h"
#include "kernels/safetensors.h"
#include "tests/test.h"

#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t put = fwrite(data, 1, len, fp);
    return fclose(fp) == 0 && put == len ? 0 : -1;
}

/* The whole file at path, malloc'd, or NULL. */
static unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* A safetensors file with the given header length field, header text and data bytes. */
static int write_st_raw(const char *path, uint64_t hlen, const char *header, const void *data,
                        size_t dlen)
{
    size_t n = strlen(header);
    unsigned char *buf = calloc(1, 8 + n + dlen);
    if (!buf) return -1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, n);
    if (dlen) memcpy(buf + 8 + n, data, dlen);
    int rc = write_bytes(path, buf, 8 + n + dlen);
    free(buf);
    return rc;
}

/* Same, with the length field matching the header. */
static int write_st(const char *path, const char *header, const void *data, size_t dlen)
{
    return write_st_raw(path, strlen(header), header, data, dlen);
}

/* The error of opening path (code 0 when it opened). */
static strata_err open_error(const char *path)
{
    strata_err e = {0};
    st_file_t *f = NULL;
    if (st_open(path, &f, &e) == 0) {
        st_close(f);
        e.code = 0;
    }
    return e;
}

/* Number of entries in dir other than . and .. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---------------------------------------------------------------- safetensors */

TEST(io_st_round_trip)
{
    const char *dir = test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    float a[6] = {1, -2, 3.5f, 0, -0.0f, 1e-20f}, b[1] = {42}, c[1] = {0};
    st_out outs[] = {
        {"zeta", a, 2, {2, 3}},
        {"alpha.weight", b, 0, {0}},
        {"empty", c, 2, {0, 5}},
    };
    strata_err e = {0};
    CHECKF(st_write_f32(path, outs, 3, &e) == 0, "%s", e.msg);
    CHECKF(dir_entries(dir) == 1, "temporary file left behind");
    st_file_t *f;
    CHECKF(st_open(path, &f, &e) == 0, "%s", e.msg);
    int ok = st_count(f) == 3 && strcmp(st_at(f, 0)->name, "alpha.weight") == 0 &&
             strcmp(st_at(f, 1)->name, "empty") == 0 && strcmp(st_at(f, 2)->name, "zeta") == 0;
    const st_tensor *t = st_find(f, "alpha.weight");
    ok = ok && t && t->ndim == 0 && st_numel(t) == 1 && t->dtype == ST_DTYPE_F32;
    t = st_find(f, "empty");
    ok = ok && t && st_numel(t) == 0 && t->nbytes == 0 && !st_find(f, "nope");
    float got[6] = {0};
    ok = ok && st_read_f32(f, "zeta", 2, (int64_t[]){2, 3}, got, &e) == 0;
    for (int i = 0; ok && i < 6; i++)
        ok = same_bits(got[i], a[i]);
    ok = ok && st_read_f32(f, "alpha.weight", 0, NULL, got, &e) == 0 && got[0] == 42;
    ok = ok && strcmp(st_path(f), path) == 0;
    st_close(f);
    CHECKF(ok, "round trip mismatch (%s)", e.msg);
}

/* st_write_f32 writes what safetensors.numpy.save_file writes: same key order, padding, bytes. */
TEST(io_st_write_matches_python)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/mine.safetensors", test_tmpdir());
    float z[1] = {7}, b[4] = {0, 1, 2, 3}, a[3] = {1, -2, 0.5f};
    st_out outs[] = {{"z", z, 0, {0}}, {"b", b, 2, {2, 2}}, {"a.weight", a, 1, {3}}};
    strata_err e = {0};
    CHECKF(st_write_f32(path, outs, 3, &e) == 0, "%s", e.msg);
    size_t n1, n2;
    unsigned char *mine = read_bytes(path, &n1);
    unsigned char *ref = read_bytes("tests/fixtures/io/f32_sorted.safetensors", &n2);
    int same = mine && ref && n1 == n2 && memcmp(mine, ref, n1) == 0;
    free(mine);
    free(ref);
    CHECKF(same, "bytes differ from the Python library's (%zu vs %zu bytes)", n1, n2);
}

/* Every dtype the Python library writes, converted exactly; __metadata__ is not a tensor. */
TEST(io_st_reads_python_file)
{
    strata_err e = {0};
    st_file_t *f;
    CHECKF(st_open("tests/fixtures/io/tiny.safetensors", &f, &e) == 0, "%s", e.msg);
    static const struct {
        const char *name;
        st_dtype dtype;
        int n;
        float want[6];
    } cases[] = {
        {"f32", ST_DTYPE_F32, 6, {0.0f, 1.5f, -2.25f, 3.14159274101257324f, 1e-30f, -65536.0f}},
        {"f16", ST_DTYPE_F16, 6, {1.0f, -0.5f, 65504.0f, 0x1p-14f, 0x1p-24f, INFINITY}},
        {"bf16", ST_DTYPE_BF16, 4, {1.0f, -3.0f, 0x1p-10f, 0x1p100f}},
        {"i64", ST_DTYPE_I64, 3, {-5.0f, 0.0f, 123456792.0f}},
        {"i32", ST_DTYPE_I32, 2, {-7.0f, 2147483648.0f}},
        {"f64", ST_DTYPE_F64, 1, {0.1f}},
    };
    int bad = -1;
    for (int i = 0; i < 6 && bad < 0; i++) {
        const st_tensor *t = st_find(f, cases[i].name);
        float got[6];
        if (!t || t->dtype != cases[i].dtype || st_numel(t) != cases[i].n) {
            bad = i;
            break;
        }
        st_to_f32(t, got);
        for (int j = 0; j < cases[i].n; j++)
            if (!same_bits(got[j], cases[i].want[j])) bad = i;
    }
    float conv[24];
    int ok = bad < 0 && st_count(f) == 7 && !st_find(f, "__metadata__") &&
             st_read_f32(f, "down.0.conv.weight", 4, (int64_t[]){2, 3, 2, 2}, conv, &e) == 0 &&
             conv[0] == 0 && conv[23] == 23;
    st_close(f);
    CHECKF(ok, "tensor %s wrong (%s)", bad >= 0 ? cases[bad].name : "?", e.msg);
}

/* Tensor data may start at any byte: the header length need not align it. */
TEST(io_st_unaligned_data)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/odd.safetensors", test_tmpdir());
    unsigned char data[1 + 8 + 4];
    float v[2] = {1.25f, -3.5f};
    uint16_t h[2] = {0x3c00, 0xc000}; /* 1, -2 */
    data[0] = 0xAA;
    memcpy(data + 1, v, 8);
    memcpy(data + 9, h, 4);
    CHECK(write_st(path,
                   "{\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
                   "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[9,13]}}",
                   data, sizeof data) == 0);
    strata_err e = {0};
    st_file_t *f;
    CHECKF(st_open(path, &f, &e) == 0, "%s", e.msg);
    float got[2], goth[2];
    st_to_f32(st_find(f, "v"), got);
    st_to_f32(st_find(f, "h"), goth);
    st_close(f);
    CHECK(got[0] == 1.25f && got[1] == -3.5f && goth[0] == 1.0f && goth[1] == -2.0f);
}

TEST(io_st_truncated_file)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/short.safetensors", test_tmpdir());
    CHECK(write_bytes(path, "\x10\0\0\0\0", 5) == 0);
    strata_err e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, path) && strstr(e.msg, "truncated"), "%s", e.msg);
    CHECK(write_bytes(path, "", 0) == 0);
    e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, path), "%s", e.msg);
    snprintf(path, sizeof path, "%s/does-not-exist.safetensors", test_tmpdir());
    e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, path), "%s", e.msg);
}

TEST(io_st_header_beyond_file)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/x.safetensors", test_tmpdir());
    CHECK(write_st_raw(path, 1234, "{}", NULL, 0) == 0);
    strata_err e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, path) && strstr(e.msg, "truncated") &&
               strstr(e.msg, "1234"),
           "%s", e.msg);
    CHECK(write_st_raw(path, UINT64_MAX, "{}", NULL, 0) == 0); /* must not wrap around */
    e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, "truncated"), "%s", e.msg);
}

TEST(io_st_garbage_json)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/g.safetensors", test_tmpdir());
    const char *bad[] = {
        "{\"a\": {\"dtype\": \"F32\",",
        "\x01\x02garbage",
        "[1, 2, 3]",
        "{\"a\": 5}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(write_st(path, bad[i], "\0\0\0\0", 4) == 0);
        strata_err e = open_error(path);
        CHECKF(e.code == ERR_INPUT && strstr(e.msg, path), "case %zu: %s", i, e.msg);
    }
}

TEST(io_st_bad_offsets)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/m.safetensors", test_tmpdir());
    static const float data[12];
    CHECK(write_st(path,
                   "{\"conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],"
                   "\"data_offsets\":[0,10]}}",
                   data, sizeof data) == 0);
    strata_err e = open_error(path);
    CHECKF(e.code == ERR_INPUT && strstr(e.msg, path) && strstr(e.msg, "'conv_in.weight'") &&
               strstr(e.msg, "[0, 10] do not match shape [4, 3] of F32"),
           "%s", e.msg);
    const char *bad[] = {
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,96]}}", /* past the end */
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}",    /* reversed */
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        "{\"t\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(write_st(path, bad[i], data, sizeof data) == 0);
        e = open_error(path);
        CHECKF(e.code == ERR_INPUT && strstr(e.msg, path) && strstr(e.msg, "tensor 't'"),
               "case %zu: %s", i, e.msg);
    }
}

TEST(io_st_missing_fields)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/m.safetensors", test_tmpdir());
    const char *bad[][2] = {
        {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "missing dtype"},
        {"{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "missing shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", "missing data_offsets"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(write_st(path, bad[i][0], "\0\0\0\0", 4) == 0);
        strata_err e = open_error(path);
        CHECKF(e.code == ERR_INPUT && strstr(e.msg, path) && strstr(e.msg, "tensor 't'") &&
                   strstr(e.msg, bad[i][1]),
               "case %zu: %s", i, e.msg);
    }
}

TEST(io_st_wrong_shape)
{
    char path[4200], want[4400];
    snprintf(path, sizeof path, "%s/w.safetensors", test_tmpdir());
    float d[6] = {0};
    st_out o = {"w", d, 2, {2, 3}};
    strata_err e = {0};
    st_file_t *f;
    CHECKF(st_write_f32(path, &o, 1, &e) == 0 && st_open(path, &f, &e) == 0, "%s", e.msg);
    int rc1 = st_read_f32(f, "w", 2, (int64_t[]){3, 2}, d, &e);
    strata_err e1 = e;
    int rc2 = st_read_f32(f, "w", 1, (int64_t[]){6}, d, &e);
    strata_err e2 = e;
    int rc3 = st_read_f32(f, "nope", 1, (int64_t[]){6}, d, &e);
    st_close(f);
    snprintf(want, sizeof want, "%s: tensor 'w': expected shape [3, 2], got [2, 3]", path);
    CHECKF(rc1 == ERR_INPUT && strcmp(e1.msg, want) == 0, "%s", e1.msg);
    snprintf(want, sizeof want, "%s: tensor 'w': expected shape [6], got [2, 3]", path);
    CHECKF(rc2 == ERR_INPUT && strcmp(e2.msg, want) == 0, "%s", e2.msg);
    snprintf(want, sizeof want, "%s: tensor 'nope': missing", path);
    CHECKF(rc3 == ERR_INPUT && strcmp(e.msg, want) == 0, "%s", e.msg);
}

/* ---------------------------------------------------------------- half floats */

/* Every half except NaNs survives f16 -> f32 -> f16, and the f32 value is the exact one. */
TEST(io_half_round_trip)
{
    for (uint32_t h = 0; h < 65536; h++) {
        int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
        float f = f16_to_f32((uint16_t)h);
        if (exp == 31 && mant) {
            CHECKF(isnan(f) && (f32_to_f16(f) & 0x7e00) == 0x7e00, "NaN 0x%04x", h);
            continue;
        }
        double want = exp == 31  ? INFINITY
                      : exp == 0 ? ldexp(mant, -24)
                                 : ldexp(1024 + mant, exp - 25);
        if (h & 0x8000) want = -want;
        CHECKF((double)f == want && !!signbit(f) == !!(h & 0x8000), "0x%04x -> %g", h, f);
        CHECKF(f32_to_f16(f) == h, "0x%04x -> %g -> 0x%04x", h, f, f32_to_f16(f));
    }
}

/* Round to nearest even at the edges: ties, overflow, subnormals. */
TEST(io_half_rounding)
{
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {1.0f + 0x1p-11f, 0x3c00},
        {1.0f + 3 * 0x1p-11f, 0x3c02},
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},
        {65504.0f, 0x7bff},
        {65519.996f, 0x7bff},
        {65520.0f, 0x7c00},
        {1e10f, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001},
        {0x1p-25f, 0x0000},
        {0x1.8p-25f, 0x0001},
        {3 * 0x1p-25f, 0x0002},
        {0x1p-14f - 0x1p-25f, 0x0400},
        {0x1p-14f, 0x0400},
        {-0.0f, 0x8000},
        {-1e-10f, 0x8000},
        {-0x1p-24f, 0x8001},
        {0x1.ff8p-15f, 0x03ff},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECKF(f32_to_f16(cases[i].f) == cases[i].h, "%a -> 0x%04x, want 0x%04x", cases[i].f,
               f32_to_f16(cases[i].f), cases[i].h);
    CHECK(isnan(f16_to_f32(f32_to_f16(NAN))));
}

/* On random floats, the result is a nearest half, and the even one on a tie. */
TEST(io_half_nearest)
{
    uint32_t s = 12345;
    for (int i = 0; i < 200000; i++) {
        s = s * 1664525u + 1013904223u;
        uint32_t bits = (s & 0x807fffffu) | (uint32_t)(100 + (s >> 8) % 43) << 23;
        float f;
        memcpy(&f, &bits, sizeof f);
        uint16_t h = f32_to_f16(f);
        if ((h & 0x7fff) >= 0x7bff || (h & 0x7fff) == 0) continue; /* no two-sided neighbours */
        double d = fabs((double)f - f16_to_f32(h));
        double dn = fabs((double)f - f16_to_f32((uint16_t)(h - 1)));
        double dp = fabs((double)f - f16_to_f32((uint16_t)(h + 1)));
        CHECKF(d <= dn && d <= dp, "%a -> 0x%04x not nearest", f, h);
        CHECKF((d != dn && d != dp) || !(h & 1), "%a -> 0x%04x: tie not to even", f, h);
    }
}

TEST(io_bf16)
{
    CHECK(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc040) == -3.0f);
    CHECK(bf16_to_f32(0x7f80) == INFINITY && isnan(bf16_to_f32(0x7fc0)));
    CHECK(bf16_to_f32(0x0001) == 0x1p-133f);
}

/* ---------------------------------------------------------------- PNG */

static void fill_pattern(uint8_t *rgb, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(seed >> 24);
    }
}

/* The value of tEXt key in the PNG at path, read with libpng itself, into out. */
static int png_text_of(const char *path, const char *key, char *out, size_t len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    int found = -1;
    if (setjmp(png_jmpbuf(png)) == 0) {
        png_init_io(png, fp);
        png_read_info(png, info);
        png_textp texts;
        int n = png_get_text(png, info, &texts, NULL);
        for (int i = 0; i < n; i++)
            if (strcmp(texts[i].key, key) == 0 &&
                texts[i].compression == PNG_TEXT_COMPRESSION_NONE) {
                snprintf(out, len, "%s", texts[i].text);
                found = 0;
            }
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return found;
}

TEST(io_png_round_trip)
{
    const char *dir = test_tmpdir();
    char path[4200], got_text[256];
    snprintf(path, sizeof path, "%s/img.png", dir);
    enum { W = 37, H = 23 };
    uint8_t rgb[W * H * 3];
    fill_pattern(rgb, sizeof rgb, 7);
    png_text_kv kv[] = {{"strata.seed", "42"}, {"Comment", "level l32, image 7"}};
    strata_err e = {0};
    CHECKF(png_write_rgb(path, rgb, W, H, kv, 2, &e) == 0, "%s", e.msg);
    CHECKF(dir_entries(dir) == 1, "temporary file left behind");
    uint8_t *back;
    int w, h;
    CHECKF(png_read_rgb(path, &back, &w, &h, &e) == 0, "%s", e.msg);
    int same = w == W && h == H && memcmp(back, rgb, sizeof rgb) == 0;
    free(back);
    CHECK(same);
    CHECK(png_text_of(path, "strata.seed", got_text, sizeof got_text) == 0);
    CHECKF(strcmp(got_text, "42") == 0, "%s", got_text);
    CHECK(png_text_of(path, "Comment", got_text, sizeof got_text) == 0);
    CHECKF(strcmp(got_text, "level l32, image 7") == 0, "%s", got_text);
}

TEST(io_png_deterministic)
{
    char p1[4200], p2[4200];
    const char *dir = test_tmpdir();
    snprintf(p1, sizeof p1, "%s/a.png", dir);
    snprintf(p2, sizeof p2, "%s/b.png", dir);
    uint8_t rgb[64 * 48 * 3];
    fill_pattern(rgb, sizeof rgb, 3);
    png_text_kv kv[] = {{"k", "v"}};
    strata_err e = {0};
    CHECK(png_write_rgb(p1, rgb, 64, 48, kv, 1, &e) == 0);
    CHECK(png_write_rgb(p2, rgb, 64, 48, kv, 1, &e) == 0);
    size_t n1, n2;
    unsigned char *a = read_bytes(p1, &n1), *b = read_bytes(p2, &n2);
    int same = a && b && n1 == n2 && memcmp(a, b, n1) == 0;
    free(a);
    free(b);
    CHECK(same);
    png_text_kv bad[] = {{"", "v"}};
    CHECK(png_write_rgb(p1, rgb, 64, 48, bad, 1, &e) == ERR_INPUT && strstr(e.msg, p1));
}

/* Every prefix of a valid PNG fails cleanly (run under `make asan` for leaks). */
TEST(io_png_truncated)
{
    char path[4200], cut[4200];
    const char *dir = test_tmpdir();
    snprintf(path, sizeof path, "%s/full.png", dir);
    snprintf(cut, sizeof cut, "%s/cut.png", dir);
    uint8_t rgb[20 * 10 * 3];
    fill_pattern(rgb, sizeof rgb, 11);
    strata_err e = {0};
    png_text_kv kv[] = {{"k", "v"}};
    CHECK(png_write_rgb(path, rgb, 20, 10, kv, 1, &e) == 0);
    size_t n;
    unsigned char *full = read_bytes(path, &n);
    CHECK(full);
    size_t step = test_quick() ? 7 : 1;
    for (size_t len = 0; len < n; len += step) {
        if (write_bytes(cut, full, len) != 0) break;
        uint8_t *px = (uint8_t *)1;
        int w, h;
        int rc = png_read_rgb(cut, &px, &w, &h, &e);
        const char *want = len < 8 ? "not a PNG" : "truncated";
        if (rc != ERR_INPUT || px || !strstr(e.msg, cut) || !strstr(e.msg, want)) {
            free(full);
            CHECKF(0, "length %zu: rc %d: %s", len, rc, e.msg);
        }
    }
    free(full);
    CHECK(write_bytes(cut, "hello, world", 12) == 0);
    uint8_t *px;
    int w, h;
    CHECK(png_read_rgb(cut, &px, &w, &h, &e) == ERR_INPUT && strstr(e.msg, "not a PNG"));
}

/* Grey, RGBA, 16-bit and palette files, written with libpng's simplified API. */
TEST(io_png_reads_other_formats)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/f.png", test_tmpdir());
    enum { W = 5, H = 3, N = W * H };
    uint8_t grey[N], rgba[N * 4], pal_idx[N], colormap[4 * 3];
    uint16_t deep[N * 3];
    fill_pattern(grey, N, 1);
    fill_pattern(rgba, N * 4, 2);
    fill_pattern(colormap, sizeof colormap, 3);
    for (int i = 0; i < N; i++)
        pal_idx[i] = (uint8_t)(i % 4);
    for (int i = 0; i < N * 3; i++)
        deep[i] = (uint16_t)(i * 4099 + 77);
    struct {
        png_uint_32 format;
        const void *pixels;
        const void *colormap;
    } cases[] = {
        {PNG_FORMAT_GRAY, grey, NULL},
        {PNG_FORMAT_RGBA, rgba, NULL},
        {PNG_FORMAT_LINEAR_RGB, deep, NULL},
        {PNG_FORMAT_RGB_COLORMAP, pal_idx, colormap},
    };
    for (int c = 0; c < 4; c++) {
        png_image img = {.version = PNG_IMAGE_VERSION, .width = W, .height = H};
        img.format = cases[c].format;
        img.colormap_entries = cases[c].colormap ? 4 : 0;
        CHECKF(png_image_write_to_file(&img, path, 0, cases[c].pixels, 0, cases[c].colormap),
               "case %d: %s", c, img.message);
        uint8_t *got;
        int w, h;
        strata_err e = {0};
        CHECKF(png_read_rgb(path, &got, &w, &h, &e) == 0, "case %d: %s", c, e.msg);
        int bad = -1;
        for (int i = 0; i < N * 3 && bad < 0; i++) {
            int p = i / 3, ch = i % 3, want;
            if (c == 0)
                want = grey[p];
            else if (c == 1)
                want = rgba[p * 4 + ch];
            else if (c == 2)
                want = deep[i] >> 8;
            else
                want = colormap[pal_idx[p] * 3 + ch];
            if (got[i] != want) bad = i;
        }
        free(got);
        CHECKF(w == W && h == H && bad < 0, "case %d: byte %d differs", c, bad);
    }
}

/* ---------------------------------------------------------------- float <-> RGB8 */

TEST(io_image_conversions)
{
    /* one pixel per value: -1 -> 0, 1 -> 255, 0 -> 127.5 -> 128 (half to even), clamping, NaN */
    float chw[3 * 6] = {-1, 1, 0, 5, -5, NAN, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
    uint8_t rgb[6 * 3];
    image_from_tensor(chw, 2, 3, rgb);
    static const uint8_t want_r[6] = {0, 255, 128, 255, 0, 0};
    for (int i = 0; i < 6; i++)
        CHECKF(rgb[i * 3] == want_r[i] && rgb[i * 3 + 1] == 128 && rgb[i * 3 + 2] == 255,
               "pixel %d: %d %d %d", i, rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2]);
    /* every 8-bit value survives RGB8 -> float -> RGB8 */
    uint8_t all[256 * 3], back[256 * 3];
    float t[256 * 3];
    for (int i = 0; i < 256 * 3; i++)
        all[i] = (uint8_t)(i / 3);
    image_to_tensor(all, 16, 16, t);
    CHECK(t[0] == -1.0f && t[255] == 1.0f && t[256 + 255] == 1.0f);
    image_from_tensor(t, 16, 16, back);
    CHECK(memcmp(all, back, sizeof all) == 0);
}

/* Random byte edits of a safetensors file's header: st_open refuses or returns tensors whose
 * data lies inside the file (reading them all must stay in bounds: run under make asan). */
TEST(io_st_header_mutations_never_crash)
{
    FILE *f = fopen("tests/fixtures/io/tiny.safetensors", "rb");
    CHECK(f);
    static unsigned char orig[1 << 16], buf[1 << 16];
    size_t len = fread(orig, 1, sizeof orig, f);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | orig[i];
    CHECK(len > 8 && hlen + 8 <= len);
    char path[1024];
    snprintf(path, sizeof path, "%s/m.safetensors", test_tmpdir());
    static const char pool[] = "0123456789[]{}\",:-eE .FIBU";
    uint32_t rng = 777;
    int opened = 0, refused = 0;
    for (int run = 0; run < (test_quick() ? 300 : 3000); run++) {
        memcpy(buf, orig, len);
        for (int k = 0; k < 1 + run % 3; k++) {
            rng = rng * 1664525u + 1013904223u;
            size_t at = 8 + (rng >> 8) % hlen;
            rng = rng * 1664525u + 1013904223u;
            buf[at] = (unsigned char)pool[(rng >> 8) % (sizeof pool - 1)];
        }
        FILE *o = fopen(path, "wb");
        CHECK(o && fwrite(buf, 1, len, o) == len);
        fclose(o);
        st_file_t *st;
        strata_err e = {0};
        if (st_open(path, &st, &e)) {
            CHECKF(e.code == ERR_INPUT && strstr(e.msg, "m.safetensors"), "run %d: %s", run, e.msg);
            refused++;
            continue;
        }
        for (int i = 0; i < st_count(st); i++) {
            const st_tensor *t = st_at(st, i);
            if (t->dtype == ST_DTYPE_OTHER) continue;
            float *x = malloc((size_t)st_numel(t) * sizeof(float) + 4);
            st_to_f32(t, x);
            free(x);
        }
        st_close(st);
        opened++;
    }
    CHECKF(refused > 0, "refused %d, opened %d", refused, opened);
}
