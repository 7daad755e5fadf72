/* Decoding limits of every Persistence method: how large a request may be and how many
 * elements its repeated fields may carry, checked before anything is unpacked. */
#include <string.h>

#include "pst.h"

/* Fields a newer client may send that this build does not know yet, per request. */
#define UNKNOWN_FIELDS 16
/* Single-record requests: a few strings, texts and JSON documents of the API's limits. */
#define SMALL (256u * 1024)

#define ONE(name_, bytes_) \
    { \
        name_, \
        { \
            .max_request_bytes = (bytes_), .wire = {.max_unknown = UNKNOWN_FIELDS } \
        } \
    }

typedef struct row {
    const char *name;
    oc_rpc_limits_t limits;
} row_t;

/* The element limits equal the API's (persistence.proto), so a request the handler would
 * refuse for its size is refused before it costs memory. */
static const oc_pb_field_limit_t attachments[] = {{"attachments", PST_MAX_ATTACHMENTS}};
static const oc_pb_field_limit_t inbound[] = {{"messages", PST_MAX_BATCH},
                                              {"messages.attachments", PST_MAX_ATTACHMENTS}};
static const oc_pb_field_limit_t credentials[] = {{"credentials", PST_MAX_CREDENTIALS}};
static const oc_pb_field_limit_t receipt_mids[] = {{"external_message_ids", 100}};

static const row_t rows[] = {
    /* 100 messages with texts, JSON and attachments; gRPC's own limit is the server's. */
    {"PersistInbound",
     {.max_request_bytes = 8u << 20,
      .max_decode_bytes = 24u << 20,
      .wire = {.fields = inbound, .nfields = 2, .max_unknown = UNKNOWN_FIELDS}}},
    {"InsertMessage",
     {.max_request_bytes = 2u << 20,
      .wire = {.fields = attachments, .nfields = 1, .max_unknown = UNKNOWN_FIELDS}}},
    {"AddAttachments",
     {.max_request_bytes = 2u << 20,
      .wire = {.fields = attachments, .nfields = 1, .max_unknown = UNKNOWN_FIELDS}}},
    {"UpdateChannelCredentials",
     {.max_request_bytes = SMALL,
      .wire = {.fields = credentials, .nfields = 1, .max_unknown = UNKNOWN_FIELDS}}},
    {"ApplyReceipt",
     {.max_request_bytes = SMALL,
      .wire = {.fields = receipt_mids, .nfields = 1, .max_unknown = UNKNOWN_FIELDS}}},
    ONE("UpsertContact", SMALL),
    ONE("UpsertConversation", SMALL),
    ONE("GetConversation", SMALL),
    ONE("ListConversations", SMALL),
    ONE("ListMessages", SMALL),
    ONE("RegisterChannelAccount", SMALL),
    ONE("GetChannelAccount", SMALL),
    ONE("ListChannelAccounts", SMALL),
    ONE("ResolveChannelAccount", SMALL),
    ONE("RecordChannelStatus", SMALL),
    ONE("CreateOutbound", SMALL),
    ONE("CompleteOutbound", SMALL),
    ONE("ClaimDueOutbound", SMALL),
    ONE("ReconcileOutbound", SMALL),
};

const oc_rpc_limits_t *pst_method_limits(const char *name)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (strcmp(rows[i].name, name) == 0) return &rows[i].limits;
    return NULL;
}
