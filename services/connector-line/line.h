/* The LINE provider of the connector engine: its facts, and what its modules share. */
#ifndef LINE_H
#define LINE_H

#include <stdint.h>

#include "conn.h"
#include "omnichat/lru.h"

#define LINE_TEXT_MAX_UNITS 5000 /* UTF-16 code units of one text message */
#define LINE_WEBHOOK_PREFIX "/webhooks/line/"
#define LINE_TIMESTAMP_MAX_MS CONN_TIMESTAMP_MAX_MS

/* The LINE provider (line_provider.c): hand it to conn_main. */
extern const conn_provider_t line_provider;

/* The LINE options beyond the engine's (conn_provider_config). */
typedef struct line_config {
    long long profile_timeout_ms;
} line_config_t;

/* What the LINE provider keeps between calls (conn_t.provider_state). */
typedef struct line_state {
    oc_lru_t *profiles; /* account/user -> display name, NUL, picture URL */
} line_state_t;

#endif
