/* Wire-level walk of protobuf input to refuse strings protobuf-c would silently truncate. */
#include "omnichat/pbcheck.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "omnichat/util.h"

#define MAX_DEPTH 32
#define MAX_COUNTED_FIELDS 128
#define PATH_MAX_LEN 256

typedef enum { WALK_OK, WALK_BAD_STRING, WALK_TOO_DEEP, WALK_MALFORMED } walk_t;

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

/* Appends ".name" or ".name[i]" to path (truncating quietly: the path is only for humans). */
static void path_push(char *path, size_t at, const ProtobufCFieldDescriptor *f, uint32_t index)
{
    const char *dot = at > 0 ? "." : "";

    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        snprintf(path + at, PATH_MAX_LEN - at, "%s%s[%u]", dot, f->name, index);
    else
        snprintf(path + at, PATH_MAX_LEN - at, "%s%s", dot, f->name);
}

static walk_t walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, int depth,
                   char *path)
{
    uint32_t counts[MAX_COUNTED_FIELDS] = {0};
    size_t at = strlen(path);
    size_t pos = 0;

    if (depth > MAX_DEPTH) return WALK_TOO_DEEP;
    while (pos < len) {
        uint64_t key, n;
        const ProtobufCFieldDescriptor *f;

        if (!read_varint(p, len, &pos, &key)) return WALK_MALFORMED;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, len, &pos, &n)) return WALK_MALFORMED;
            continue;
        case 1:
            pos += 8;
            continue;
        case 5:
            pos += 4;
            continue;
        case 2:
            break;
        default:
            return WALK_MALFORMED; /* groups are not proto3 */
        }
        if (!read_varint(p, len, &pos, &n) || n > len - pos) return WALK_MALFORMED;
        f = protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
        if (f != NULL &&
            (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            size_t idx = (size_t)(f - desc->fields);
            uint32_t index = idx < MAX_COUNTED_FIELDS ? counts[idx]++ : 0;

            path_push(path, at, f, index);
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                /* oc_utf8_valid refuses NUL as well as malformed sequences. */
                if (n > 0 && !oc_utf8_valid((const char *)p + pos, (size_t)n))
                    return WALK_BAD_STRING;
            } else {
                walk_t w = walk(f->descriptor, p + pos, (size_t)n, depth + 1, path);
                if (w != WALK_OK) return w;
            }
            path[at] = '\0';
        }
        pos += (size_t)n;
    }
    return pos == len ? WALK_OK : WALK_MALFORMED;
}

oc_err_t oc_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                             size_t len, oc_error_t *err)
{
    char path[PATH_MAX_LEN] = "";

    switch (walk(desc, data, len, 0, path)) {
    case WALK_BAD_STRING:
        return oc_error_set(err, OC_E_INVALID, "%s: must be valid UTF-8 without NUL characters",
                            path);
    case WALK_TOO_DEEP:
        return oc_error_set(err, OC_E_INVALID, "request: nested too deeply");
    default:
        return OC_OK; /* framing errors are reported by the unpacker */
    }
}
