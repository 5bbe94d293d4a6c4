/* The bounded pre-scan every frame passes before msgpack-c sees it.
 *
 * Why: msgpack-c allocates n * sizeof(msgpack_object) (24 bytes) the moment it reads an array or
 * map header declaring n entries, before it has seen any of them (unpack.c,
 * template_callback_array/map). A 5-byte header declaring 2^32-1 entries would ask for 96 GiB.
 * So we walk the raw bytes first, without allocating: every count must fit in the bytes left
 * (each entry takes at least one byte, each map entry two), nesting stops at PROTO_MAX_DEPTH,
 * the frame holds at most PROTO_MAX_OBJECTS objects and exactly one top-level object. A frame
 * that passes costs msgpack-c at most 24 bytes per object: at most 24x the frame and at most
 * 24 MiB in all (str and bin are referenced in place, not copied). The walk is O(len). */
#include "proto/proto.h"

#include <stdint.h>

struct scan {
    const uint8_t *p;
    size_t len, off, objects;
    strata_err *e;
};

enum scan_kind { SCAN_SCALAR, SCAN_BLOB, SCAN_ARRAY, SCAN_MAP, SCAN_RESERVED };

/* What one type byte announces: its kind, how many bytes of big-endian length or count follow
 * it (lenw: 0, 1, 2 or 4), the count itself for fix* types (lenw 0), and the payload bytes the
 * length does not cover (scalars: all of their payload; ext: the ext type byte). */
struct scan_head {
    enum scan_kind kind;
    int lenw;
    uint64_t count, fixed;
};

/* The MessagePack types 0xc0..0xdf, in the specification's order: S(n) a scalar of n payload
 * bytes, B(w, f) a str/bin/ext with a w-byte length (and f type bytes), A(w)/M(w) an array/map
 * with a w-byte count. */
// clang-format off
#define S(n) {SCAN_SCALAR, 0, 0, n}
#define B(w, f) {SCAN_BLOB, w, 0, f}
#define A(w) {SCAN_ARRAY, w, 0, 0}
#define M(w) {SCAN_MAP, w, 0, 0}
static const struct scan_head scan_types[32] = {
    S(0), {SCAN_RESERVED, 0, 0, 0}, S(0), S(0),    /* nil, never used, false, true */
    B(1, 0), B(2, 0), B(4, 0),                     /* bin 8, 16, 32 */
    B(1, 1), B(2, 1), B(4, 1),                     /* ext 8, 16, 32 */
    S(4), S(8),                                    /* float 32, 64 */
    S(1), S(2), S(4), S(8),                        /* uint 8, 16, 32, 64 */
    S(1), S(2), S(4), S(8),                        /* int 8, 16, 32, 64 */
    S(2), S(3), S(5), S(9), S(17),                 /* fixext 1, 2, 4, 8, 16 (with the type byte) */
    B(1, 0), B(2, 0), B(4, 0),                     /* str 8, 16, 32 */
    A(2), A(4), M(2), M(4),                        /* array 16, 32, map 16, 32 */
};
// clang-format on
#undef S
#undef B
#undef A
#undef M

/* Big-endian unsigned integer of n bytes at p. */
static uint64_t scan_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Classify the type byte b. */
static struct scan_head scan_classify(uint8_t b)
{
    if (b <= 0x7f || b >= 0xe0) return (struct scan_head){SCAN_SCALAR, 0, 0, 0}; /* fixint */
    if (b <= 0x8f) return (struct scan_head){SCAN_MAP, 0, b & 0x0fu, 0};
    if (b <= 0x9f) return (struct scan_head){SCAN_ARRAY, 0, b & 0x0fu, 0};
    if (b <= 0xbf) return (struct scan_head){SCAN_BLOB, 0, b & 0x1fu, 0}; /* fixstr */
    return scan_types[b - 0xc0];
}

/* Consume n bytes, or fail as truncated. */
static int scan_take(struct scan *s, uint64_t n)
{
    if (n > s->len - s->off)
        return err_set(s->e, ERR_FRAME,
                       "frame: truncated at byte %zu (%llu more bytes announced, %zu left)", s->off,
                       (unsigned long long)n, s->len - s->off);
    s->off += (size_t)n;
    return 0;
}

static int scan_object(struct scan *s, int depth);

/* Scan the n entries of a container (a map's keys and values count as 2 entries each), after
 * checking that n fits in the bytes left: this is the check msgpack-c itself does not make. */
static int scan_entries(struct scan *s, uint64_t n, int depth, const char *what, uint64_t count,
                        size_t at)
{
    if (depth > PROTO_MAX_DEPTH)
        return err_set(s->e, ERR_FRAME, "frame: nesting deeper than %d at byte %zu",
                       PROTO_MAX_DEPTH, at);
    if (n > s->len - s->off)
        return err_set(s->e, ERR_FRAME,
                       "frame: %s of %llu entries at byte %zu, only %zu bytes left", what,
                       (unsigned long long)count, at, s->len - s->off);
    for (uint64_t i = 0; i < n; i++) {
        int rc = scan_object(s, depth);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Scan one object at s->off; depth is the nesting level of its container entries. */
static int scan_object(struct scan *s, int depth)
{
    size_t at = s->off;
    int rc = scan_take(s, 1);
    if (rc < 0) return rc;
    if (++s->objects > PROTO_MAX_OBJECTS)
        return err_set(s->e, ERR_TOO_LARGE, "frame: more than %zu objects",
                       (size_t)PROTO_MAX_OBJECTS);
    struct scan_head h = scan_classify(s->p[at]);
    if (h.kind == SCAN_RESERVED)
        return err_set(s->e, ERR_FRAME, "frame: reserved byte 0x%02x at byte %zu", s->p[at], at);
    uint64_t count = h.count;
    if (h.lenw) {
        if ((rc = scan_take(s, (uint64_t)h.lenw)) < 0) return rc;
        count = scan_be(s->p + s->off - h.lenw, h.lenw);
    }
    if (h.kind == SCAN_ARRAY) return scan_entries(s, count, depth + 1, "array", count, at);
    if (h.kind == SCAN_MAP) return scan_entries(s, 2 * count, depth + 1, "map", count, at);
    return scan_take(s, count + h.fixed); /* a scalar, str, bin or ext */
}

int proto_frame_check(const void *buf, size_t len, strata_err *e)
{
    if (len > PROTO_MAX_FRAME)
        return err_set(e, ERR_TOO_LARGE, "frame: %zu bytes, over the %zu-byte cap", len,
                       (size_t)PROTO_MAX_FRAME);
    if (len == 0) return err_set(e, ERR_FRAME, "frame: empty");
    struct scan s = {buf, len, 0, 0, e};
    int rc = scan_object(&s, 0);
    if (rc < 0) return rc;
    if (s.off != len)
        return err_set(e, ERR_FRAME, "frame: %zu trailing bytes after the message", len - s.off);
    return 0;
}
