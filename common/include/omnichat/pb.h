/* Short names for the generated protobuf-c types, and one table of enum value names. */
#ifndef OMNICHAT_PB_H
#define OMNICHAT_PB_H

#include "omnichat/connector/v1/connector.pb-c.h"
#include "omnichat/persistence/v1/persistence.pb-c.h"

/* protobuf-c's names carry the whole package; these keep handler code readable. */
#define PB(name) Omnichat__Persistence__V1__##name
#define PBE(name) OMNICHAT__PERSISTENCE__V1__##name
#define PB_INIT(name) OMNICHAT__PERSISTENCE__V1__##name##__INIT
#define CPB(name) Omnichat__Connector__V1__##name
#define CPB_INIT(name) OMNICHAT__CONNECTOR__V1__##name##__INIT

/* The persistence enums that have names on the wire, in SQL, in metrics and in logs. */
typedef enum oc_pb_enum {
    OC_PB_CHANNEL_TYPE,
    OC_PB_CHANNEL_STATUS,
    OC_PB_DIRECTION,
    OC_PB_SENDER_TYPE,
    OC_PB_CONTENT_TYPE,
    OC_PB_MESSAGE_STATUS,
    OC_PB_ERROR_CATEGORY,
    OC_PB_ENUM__COUNT
} oc_pb_enum_t;

/*
 * The short lowercase name of value v of enum e, derived once from the proto descriptor
 * (CHANNEL_TYPE_LINE -> "line", ERROR_CATEGORY_AUTH_ERROR -> "auth_error"): the proto is the one
 * source of the names. NULL for 0 (unspecified) and for values this build does not know.
 * Static strings. Thread-safe.
 */
const char *oc_pb_enum_name(oc_pb_enum_t e, int v);

/* The value named s ("auth_error"), or 0 when s is NULL or names nothing. Thread-safe. */
int oc_pb_enum_value(oc_pb_enum_t e, const char *s);

#endif
