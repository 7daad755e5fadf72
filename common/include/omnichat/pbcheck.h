/* Wire-level checks of protobuf input that protobuf-c does not make: string contents, and the
 * amount of work an encoded request may ask of the unpacker. */
#ifndef OMNICHAT_PBCHECK_H
#define OMNICHAT_PBCHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/err.h"

/* The most elements one repeated field may carry, per enclosing message. `field` is the path of
 * field names from the request without indexes: "messages", "messages.attachments". */
typedef struct oc_pb_field_limit {
    const char *field;
    uint32_t max;
} oc_pb_field_limit_t;

/*
 * What one request may contain on the wire. Unpacking costs memory per element (protobuf-c
 * keeps every repeated element and every unknown field, ~100-600 bytes each for a 2-byte
 * entry), so these bound decoding memory before any of it is spent.
 */
typedef struct oc_pb_limits {
    const oc_pb_field_limit_t *fields; /* per-field limits (may be NULL when nfields is 0) */
    size_t nfields;
    uint32_t max_repeated; /* any repeated field not listed; 0 means OC_PB_DEFAULT_REPEATED */
    uint32_t max_unknown;  /* unknown fields in the whole request (a newer client's fields) */
    uint32_t max_fields;   /* field occurrences in the whole request; 0: OC_PB_DEFAULT_FIELDS */
} oc_pb_limits_t;

#define OC_PB_DEFAULT_REPEATED 1024u
#define OC_PB_DEFAULT_FIELDS 100000u

/*
 * Walks the encoded message `data[0..len)` of type `desc` once and checks that
 *  - every string field, nested messages and repeated fields included, is valid UTF-8 without
 *    NUL characters (protobuf-c hands strings to C as NUL-terminated char *, so an embedded NUL
 *    would silently cut the value short: two different idempotency keys would become one);
 *  - with `limits` (may be NULL: strings only), no repeated field holds more elements than its
 *    limit in any one message (packed scalars counted by element), at most max_unknown fields
 *    are unknown and at most max_fields fields occur in all.
 * *decode_cost (optional) receives an upper bound of the bytes protobuf_c_message_unpack
 * will allocate for this input (message structs, element arrays, string copies, unknown-field
 * copies, its scan records), valid when OC_OK is returned: the caller's decoding budget.
 * Returns OC_OK, or OC_E_INVALID with a message naming the field path
 * ("messages[2].content_text: must be valid UTF-8 without NUL characters", "messages: at most
 * 100 elements"). Malformed framing is left to the unpacker (OC_OK here). Nesting deeper than
 * 32 levels is OC_E_INVALID. Pure function; thread-safe; uses no heap.
 */
oc_err_t oc_pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                     const oc_pb_limits_t *limits, size_t *decode_cost, oc_error_t *err);

/* oc_pb_check without limits. */
oc_err_t oc_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                             size_t len, oc_error_t *err);

#endif
