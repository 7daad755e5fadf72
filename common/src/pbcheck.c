/* Wire-level walk of protobuf input: refuses strings protobuf-c would silently truncate, and
 * requests whose element counts would make unpacking expensive. */
#include "omnichat/pbcheck.h"

#include <stdbool.h>
#include <string.h>

#include "omnichat/util.h"

#define MAX_DEPTH 32
#define MAX_COUNTED_FIELDS 128
#define PATH_MAX_LEN 256

typedef enum {
    WALK_OK,
    WALK_BAD_STRING,
    WALK_TOO_DEEP,
    WALK_MALFORMED,
    WALK_TOO_MANY, /* path names the repeated field; limit says how many it may hold */
    WALK_UNKNOWN,  /* path names the enclosing message; limit is max_unknown */
    WALK_FIELDS,   /* limit is max_fields */
} walk_t;

typedef struct walker {
    const oc_pb_limits_t *limits; /* NULL: strings only */
    uint32_t unknown;
    uint32_t fields;
    size_t cost;              /* upper bound of what protobuf-c will allocate (see charge()) */
    uint32_t limit;           /* the limit that was hit */
    unsigned field_num;       /* the unknown field number that was one too many */
    char path[PATH_MAX_LEN];  /* "messages[2].attachments[0]": for humans */
    char shape[PATH_MAX_LEN]; /* "messages.attachments": what limits are keyed on */
} walker_t;

static bool read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len) return false;
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Copies n bytes of s at path[*at], as far as they fit (the path stays NUL-terminated). */
static void path_put(char *path, size_t *at, const char *s, size_t n)
{
    size_t room = PATH_MAX_LEN - 1 - *at;

    if (n > room) n = room;
    memcpy(path + *at, s, n);
    *at += n;
    path[*at] = '\0';
}

/* Appends ".name" or ".name[i]" (index < 0: no index) to a path, truncating quietly: paths are
 * only for humans and for limit look-ups, which then simply find no row. Built by hand, not
 * with snprintf: it runs for every string field of every request. */
static void path_push(char *path, size_t at, const char *name, long index)
{
    char num[24];
    size_t k = sizeof num;

    if (at >= PATH_MAX_LEN - 1) return;
    if (at > 0) path_put(path, &at, ".", 1);
    path_put(path, &at, name, strlen(name));
    if (index < 0) return;
    num[--k] = ']';
    do {
        num[--k] = (char)('0' + index % 10);
        index /= 10;
    } while (index > 0);
    num[--k] = '[';
    path_put(path, &at, num + k, sizeof num - k);
}

/* Bytes an allocation of n costs in an arena: rounded up to 16, plus one alignment unit for
 * the size protobuf-c asks beyond the payload (the NUL of strings, padding). */
static size_t alloc_cost(uint64_t n)
{
    return n > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)((n + 31) & ~(uint64_t)15);
}

static void charge(walker_t *w, size_t n)
{
    w->cost = n > SIZE_MAX / 2 - w->cost ? SIZE_MAX / 2 : w->cost + n;
}

static uint32_t limit_of(const walker_t *w)
{
    const oc_pb_limits_t *l = w->limits;

    for (size_t i = 0; i < l->nfields; i++)
        if (strcmp(l->fields[i].field, w->shape) == 0) return l->fields[i].max;
    return l->max_repeated != 0 ? l->max_repeated : OC_PB_DEFAULT_REPEATED;
}

/* Elements in a packed run of n bytes of scalar type t (a varint ends at a byte < 0x80). */
static uint64_t packed_count(ProtobufCType t, const uint8_t *p, uint64_t n)
{
    switch (t) {
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return n / 4;
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return n / 8;
    default: {
        uint64_t c = 0;
        for (uint64_t i = 0; i < n; i++)
            c += p[i] < 0x80;
        return c;
    }
    }
}

static walk_t walk(walker_t *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                   size_t len, int depth)
{
    /* Elements seen per repeated field in this message; fields past the array share its last
     * slot, which can only make the count stricter. */
    uint32_t counts[MAX_COUNTED_FIELDS] = {0};
    size_t at = strlen(w->path), shape_at = strlen(w->shape);
    size_t pos = 0;

    if (depth > MAX_DEPTH) return WALK_TOO_DEEP;
    /* The message itself, and the required-fields bitmap protobuf-c may allocate for it. */
    charge(w, alloc_cost(desc->sizeof_message) + alloc_cost(desc->n_fields / 8 + 1));
    while (pos < len) {
        uint64_t key, n = 0;
        const ProtobufCFieldDescriptor *f;
        unsigned wire;

        if (!read_varint(p, len, &pos, &key)) return WALK_MALFORMED;
        wire = (unsigned)(key & 7);
        switch (wire) {
        case 0:
            if (!read_varint(p, len, &pos, &n)) return WALK_MALFORMED;
            break;
        case 1:
            if (len - pos < 8) return WALK_MALFORMED;
            pos += 8;
            break;
        case 5:
            if (len - pos < 4) return WALK_MALFORMED;
            pos += 4;
            break;
        case 2:
            if (!read_varint(p, len, &pos, &n) || n > len - pos) return WALK_MALFORMED;
            break;
        default:
            return WALK_MALFORMED; /* groups are not proto3 */
        }
        f = key >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
                : NULL;
        /* protobuf-c scans every occurrence into a 32-byte record, in slabs that double: at
         * most 64 bytes each. An unknown field is kept: a 24-byte record and a copy. */
        charge(w, 64);
        if (f == NULL) charge(w, 32 + alloc_cost(n + 16));
        if (w->limits != NULL) {
            if (++w->fields >
                (w->limits->max_fields ? w->limits->max_fields : OC_PB_DEFAULT_FIELDS)) {
                w->limit = w->limits->max_fields ? w->limits->max_fields : OC_PB_DEFAULT_FIELDS;
                return WALK_FIELDS;
            }
            if (f == NULL && ++w->unknown > w->limits->max_unknown) {
                w->limit = w->limits->max_unknown;
                w->field_num = (unsigned)(key >> 3);
                return WALK_UNKNOWN;
            }
        }
        uint32_t index = 0;
        if (f != NULL && f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t idx = (size_t)(f - desc->fields);
            uint32_t *c = &counts[idx < MAX_COUNTED_FIELDS ? idx : MAX_COUNTED_FIELDS - 1];
            uint64_t add = 1;

            index = *c;
            if (wire == 2 && f->type != PROTOBUF_C_TYPE_STRING &&
                f->type != PROTOBUF_C_TYPE_BYTES && f->type != PROTOBUF_C_TYPE_MESSAGE)
                add = packed_count(f->type, p + pos, n);
            if (w->limits != NULL) {
                path_push(w->shape, shape_at, f->name, -1);
                uint32_t max = limit_of(w);
                if (add > max || *c > max - add) {
                    path_push(w->path, at, f->name, -1);
                    w->limit = max;
                    return WALK_TOO_MANY;
                }
            }
            *c += (uint32_t)add;
            /* The element array: at most 8 bytes per element, one array per field. */
            charge(w, (size_t)add * 8 + (index == 0 ? 32 : 0));
        }
        if (wire == 2 && f != NULL &&
            (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            path_push(w->path, at, f->name,
                      f->label == PROTOBUF_C_LABEL_REPEATED ? (long)index : -1L);
            path_push(w->shape, shape_at, f->name, -1);
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                charge(w, alloc_cost(n));
                /* oc_utf8_valid refuses NUL as well as malformed sequences. */
                if (n > 0 && !oc_utf8_valid((const char *)p + pos, (size_t)n))
                    return WALK_BAD_STRING;
            } else {
                walk_t r = walk(w, f->descriptor, p + pos, (size_t)n, depth + 1);
                if (r != WALK_OK) return r;
            }
        }
        if (wire == 2 && f != NULL && f->type == PROTOBUF_C_TYPE_BYTES) charge(w, alloc_cost(n));
        w->path[at] = '\0';
        w->shape[shape_at] = '\0';
        if (wire == 2) pos += (size_t)n;
    }
    return WALK_OK;
}

oc_err_t oc_pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                     const oc_pb_limits_t *limits, size_t *decode_cost, oc_error_t *err)
{
    walker_t w;

    memset(&w, 0, sizeof w);
    w.limits = limits;
    walk_t r = walk(&w, desc, data, len, 0);
    if (decode_cost != NULL) *decode_cost = w.cost;
    switch (r) {
    case WALK_BAD_STRING:
        return oc_error_set(err, OC_E_INVALID, "%s: must be valid UTF-8 without NUL characters",
                            w.path);
    case WALK_TOO_DEEP:
        return oc_error_set(err, OC_E_INVALID, "request: nested too deeply");
    case WALK_TOO_MANY:
        return oc_error_set(err, OC_E_INVALID, "%s: at most %u elements", w.path, w.limit);
    case WALK_UNKNOWN:
        return oc_error_set(err, OC_E_INVALID,
                            "%s: unknown field %u (at most %u unknown fields per request)",
                            w.path[0] ? w.path : "request", w.field_num, w.limit);
    case WALK_FIELDS:
        return oc_error_set(err, OC_E_INVALID, "request: more than %u fields", w.limit);
    default:
        return OC_OK; /* framing errors are reported by the unpacker */
    }
}

oc_err_t oc_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                             size_t len, oc_error_t *err)
{
    return oc_pb_check(desc, data, len, NULL, NULL, err);
}
