/* Enum value names derived once from the protobuf-c descriptors. */
#include "omnichat/pb.h"

#include <ctype.h>
#include <pthread.h>
#include <string.h>

#define NAMES_MAX 32 /* values per enum (ErrorCategory has 11) */
#define NAME_LEN 40

typedef struct enum_table {
    const ProtobufCEnumDescriptor *desc;
    const char *prefix; /* dropped from every value name */
    char names[NAMES_MAX][NAME_LEN];
} enum_table_t;

static enum_table_t tables[OC_PB_ENUM__COUNT] = {
    [OC_PB_CHANNEL_TYPE] = {&omnichat__persistence__v1__channel_type__descriptor,
                            "CHANNEL_TYPE_",
                            {{0}}},
    [OC_PB_CHANNEL_STATUS] = {&omnichat__persistence__v1__channel_status__descriptor,
                              "CHANNEL_STATUS_",
                              {{0}}},
    [OC_PB_DIRECTION] = {&omnichat__persistence__v1__direction__descriptor, "DIRECTION_", {{0}}},
    [OC_PB_SENDER_TYPE] = {&omnichat__persistence__v1__sender_type__descriptor,
                           "SENDER_TYPE_",
                           {{0}}},
    [OC_PB_CONTENT_TYPE] = {&omnichat__persistence__v1__content_type__descriptor,
                            "CONTENT_TYPE_",
                            {{0}}},
    [OC_PB_MESSAGE_STATUS] = {&omnichat__persistence__v1__message_status__descriptor,
                              "MESSAGE_STATUS_",
                              {{0}}},
    [OC_PB_ERROR_CATEGORY] = {&omnichat__persistence__v1__error_category__descriptor,
                              "ERROR_CATEGORY_",
                              {{0}}},
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    for (size_t t = 0; t < OC_PB_ENUM__COUNT; t++) {
        enum_table_t *tab = &tables[t];
        size_t plen = strlen(tab->prefix);
        for (unsigned i = 0; i < tab->desc->n_values; i++) {
            const ProtobufCEnumValue *ev = &tab->desc->values[i];
            if (ev->value <= 0 || ev->value >= NAMES_MAX ||
                strncmp(ev->name, tab->prefix, plen) != 0)
                continue;
            const char *src = ev->name + plen;
            size_t k = 0;
            for (; src[k] != '\0' && k + 1 < NAME_LEN; k++)
                tab->names[ev->value][k] = (char)tolower((unsigned char)src[k]);
            tab->names[ev->value][k] = '\0';
        }
    }
}

const char *oc_pb_enum_name(oc_pb_enum_t e, int v)
{
    if ((unsigned)e >= OC_PB_ENUM__COUNT || v <= 0 || v >= NAMES_MAX) return NULL;
    pthread_once(&once, build);
    return tables[e].names[v][0] != '\0' ? tables[e].names[v] : NULL;
}

int oc_pb_enum_value(oc_pb_enum_t e, const char *s)
{
    if ((unsigned)e >= OC_PB_ENUM__COUNT || s == NULL || s[0] == '\0') return 0;
    pthread_once(&once, build);
    for (int v = 1; v < NAMES_MAX; v++)
        if (strcmp(tables[e].names[v], s) == 0) return v;
    return 0;
}
