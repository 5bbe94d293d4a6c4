/* PNG I/O with libpng, and the float <-> 8-bit conversions diffusers applies around it.
 * libpng reports errors by longjmp; every decode/encode keeps its allocations in variables
 * that survive the jump, and routes messages into a buffer instead of stderr. */
#include "common/common.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sides above this are refused before any pixel allocation (a 16384^2 RGB is 768 MiB). */
enum { PNG_MAX_SIDE = 16384 };

/* What libpng's callbacks share with us: the in-memory stream and the last error. */
typedef struct png_io {
    uint8_t *data;
    size_t len, cap, pos;
    int truncated;
    char msg[256];
} png_io;

/* libpng error callback: keep the message, jump back to the setjmp of the caller. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    png_io *io = png_get_error_ptr(png);
    snprintf(io->msg, sizeof io->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, ...) are not errors, and kernels never print. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* ---------------------------------------------------------------- writing */

static void png_mem_write(png_structp png, png_bytep src, size_t n)
{
    png_io *io = png_get_io_ptr(png);
    if (n > io->cap - io->len) {
        size_t cap = io->cap ? io->cap : 65536;
        while (n > cap - io->len)
            cap *= 2;
        uint8_t *grown = realloc(io->data, cap);
        if (!grown) png_error(png, "out of memory");
        io->data = grown;
        io->cap = cap;
    }
    memcpy(io->data + io->len, src, n);
    io->len += n;
}

static void png_mem_flush(png_structp png)
{
    (void)png;
}

/* A tEXt keyword: 1-79 printable ASCII characters, no leading or trailing space (PNG spec
 * 11.3.4.3 allows Latin-1; we keep to ASCII so every reader agrees on the bytes). */
static int text_key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n < 1 || n > 79 || key[0] == ' ' || key[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 32 || key[i] > 126) return 0;
    return 1;
}

/* Encode into io->data. Fixed compression level and no tIME chunk, so the same pixels and
 * text always give the same bytes (with the same zlib). Returns 0 or -1 with io->msg set. */
static int png_encode(png_io *io, const uint8_t *rgb, int w, int h, png_text *texts, int ntext)
{
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, io, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(io->msg, sizeof io->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, io, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    if (ntext > 0) png_set_text(png, info, texts, ntext);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

static int png_write(const char *path, const uint8_t *rgb, int w, int h, const png_text_kv *text,
                     int ntext, int sync, strata_err *e)
{
    if (w <= 0 || h <= 0 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE || ntext < 0)
        return err_set(e, ERR_INPUT, "%s: bad image size %dx%d", path, w, h);
    png_text *texts = calloc((size_t)ntext + 1, sizeof *texts);
    if (!texts) return err_set(e, ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < ntext; i++) {
        if (!text_key_ok(text[i].key) || !text[i].value) {
            free(texts);
            return err_set(e, ERR_INPUT, "%s: text chunk %d: bad key '%s'", path, i,
                           text[i].key ? text[i].key : "(null)");
        }
        texts[i].compression = PNG_TEXT_COMPRESSION_NONE;
        texts[i].key = (png_charp)text[i].key; /* libpng copies; it does not write through */
        texts[i].text = (png_charp)text[i].value;
    }
    png_io io = {0};
    int rc = png_encode(&io, rgb, w, h, texts, ntext);
    free(texts);
    if (rc)
        rc = err_set(e, ERR_RUNTIME, "%s: cannot encode PNG: %s", path, io.msg);
    else
        rc = file_write_atomic(path, &(struct iovec){io.data, io.len}, 1, sync, e);
    free(io.data);
    return rc;
}

int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, const png_text_kv *text,
                  int ntext, strata_err *e)
{
    return png_write(path, rgb, w, h, text, ntext, 1, e);
}

int png_write_rgb_nosync(const char *path, const uint8_t *rgb, int w, int h,
                         const png_text_kv *text, int ntext, strata_err *e)
{
    return png_write(path, rgb, w, h, text, ntext, 0, e);
}

/* ---------------------------------------------------------------- reading */

/* Serve bytes from memory; running out is a truncated file, reported through png_error. */
static void png_mem_read(png_structp png, png_bytep dst, size_t n)
{
    png_io *io = png_get_io_ptr(png);
    if (n > io->len - io->pos) {
        io->truncated = 1;
        png_error(png, "truncated");
    }
    memcpy(dst, io->data + io->pos, n);
    io->pos += n;
}

/* Ask libpng for 8-bit RGB whatever the file holds. */
static void png_set_rgb8(png_structp png)
{
    png_set_expand(png); /* palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha */
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
}

/* Decode io->data into a malloc'd RGB8 buffer. Returns 0 or -1 with io->msg set. */
static int png_decode(png_io *io, uint8_t **rgb, int *w, int *h)
{
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, io, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile pixels = NULL; /* volatile: must survive the longjmp to be freed */
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(io->msg, sizeof io->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return -1;
    }
    png_set_read_fn(png, io, png_mem_read);
    png_set_user_limits(png, PNG_MAX_SIDE, PNG_MAX_SIDE);
    /* Skip every ancillary chunk but tRNS unread: a reader of pixels needs none of them, and
     * libpng allocates a text chunk's claimed length before reading it, with no cap (a 150-byte
     * file whose tEXt said 2 GB cost a 2 GB allocation: make fuzz). Skipped, a chunk's bytes are
     * only read through, checked by its crc. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(png, info);
    png_set_rgb8(png);
    png_read_update_info(png, info);
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    if (png_get_rowbytes(png, info) != (size_t)width * 3) png_error(png, "unexpected row size");
    pixels = malloc((size_t)width * height * 3);
    rows = malloc(height * sizeof *rows);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++)
        rows[y] = pixels + (size_t)y * width * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *rgb = pixels;
    *w = (int)width;
    *h = (int)height;
    return 0;
}

/* Read the whole file at path into io->data. */
static int read_whole_file(const char *path, png_io *io, strata_err *e)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(e, ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    int rc = ERR_OK;
    for (;;) {
        if (io->len == io->cap) {
            size_t cap = io->cap ? io->cap * 2 : 65536;
            uint8_t *grown = realloc(io->data, cap);
            if (!grown) {
                rc = err_set(e, ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            io->data = grown;
            io->cap = cap;
        }
        size_t got = fread(io->data + io->len, 1, io->cap - io->len, fp);
        io->len += got;
        if (got == 0) break;
    }
    if (!rc && ferror(fp)) rc = err_set(e, ERR_INPUT, "%s: read error", path);
    fclose(fp);
    return rc;
}

int png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h, strata_err *e)
{
    png_io io = {0};
    *rgb = NULL;
    int rc = read_whole_file(path, &io, e);
    if (!rc && (io.len < 8 || png_sig_cmp(io.data, 0, 8) != 0))
        rc = err_set(e, ERR_INPUT, "%s: not a PNG", path);
    if (!rc && png_decode(&io, rgb, w, h) != 0) {
        if (io.truncated)
            rc = err_set(e, ERR_INPUT, "%s: truncated: file ends after %zu bytes", path, io.len);
        else
            rc = err_set(e, ERR_INPUT, "%s: bad PNG: %s", path, io.msg);
    }
    free(io.data);
    return rc;
}

/* ---------------------------------------------------------------- float <-> RGB8 */

/* diffusers: (x / 2 + 0.5).clamp(0, 1) in float32, then numpy (x * 255).round(), which rounds
 * half to even: rintf in the default rounding mode does the same. NaN maps to 0. */
void image_from_tensor(const float *chw, int h, int w, uint8_t *rgb)
{
    size_t plane = (size_t)h * (size_t)w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            float v = chw[(size_t)c * plane + i] / 2.0f + 0.5f;
            v = fminf(fmaxf(v, 0.0f), 1.0f);
            rgb[i * 3 + (size_t)c] = (uint8_t)rintf(v * 255.0f);
        }
}

void image_to_tensor(const uint8_t *rgb, int h, int w, float *chw)
{
    size_t plane = (size_t)h * (size_t)w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            chw[(size_t)c * plane + i] = rgb[i * 3 + (size_t)c] / 127.5f - 1.0f;
}
