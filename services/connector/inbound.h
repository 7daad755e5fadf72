/* The inbound engine: the webhook skeleton every provider's webhook runs in (ARCHITECTURE §5). */
#ifndef CONN_INBOUND_H
#define CONN_INBOUND_H

#include "conn.h"
#include "omnichat/http.h"

#define CONN_PERSIST_BATCH_MAX 100 /* messages per PersistInbound (persistence's limit) */

/*
 * The HTTP handler of POST {webhook_path}... ; user is the conn_t. One deadline
 * (webhook-timeout-ms) for the whole request; request id from X-Request-Id or a new UUID.
 * (1) The signing secret: CONN_ROUTE_PATH resolves the account named in the path (404 when
 * unknown) and unseals its secret_field, or takes the app secret (CONN_SECRET_PER_APP).
 * (2) provider->signature_valid over the raw bytes, before any parsing: 401 when wrong.
 * (3) provider->parse: 400 only when the body is unusable as a whole; bad items are skipped
 * and counted. (4) Routing of every item: the path's account, or the account of the item's
 * route_id (CONN_ROUTE_BODY); unroutable items are acknowledged, logged and counted. (5)
 * Echoes naming one of our messages go to ReconcileOutbound; other echoes are stored as
 * given. (6) provider->enrich, with at most half of the time left. (7) One PersistInbound
 * per tenant (in chunks of CONN_PERSIST_BATCH_MAX), merged with the concurrent POSTs of the
 * same account (at most one call per account in flight; inbound.c). 200 only after every
 * commit; 503 when persistence is unavailable or the deadline passed (the provider
 * redelivers), 500 for a failure of ours that a redelivery may fix. Blocks. Thread-safe.
 */
void conn_webhook_handle(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
