/* Wire-level checks of protobuf input that protobuf-c does not make (string contents). */
#ifndef OMNICHAT_PBCHECK_H
#define OMNICHAT_PBCHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/err.h"

/*
 * Walks the encoded message `data[0..len)` of type `desc` and checks that every string field,
 * nested messages and repeated fields included, is valid UTF-8 without NUL characters.
 * protobuf-c hands strings to C as NUL-terminated char *, so an embedded NUL would silently
 * cut the value short (two different idempotency keys would become one). Returns OC_OK, or
 * OC_E_INVALID with a message naming the field path ("messages[2].content_text: must be valid
 * UTF-8 without NUL characters"). Malformed framing is left to the unpacker (OC_OK here).
 * Nesting deeper than 32 levels is OC_E_INVALID. Pure function; thread-safe.
 */
oc_err_t oc_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                             size_t len, oc_error_t *err);

#endif
