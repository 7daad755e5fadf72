/* The retry worker: claims the connector's due outbound messages and delivers them. */
#ifndef CONN_WORKER_H
#define CONN_WORKER_H

#include "conn.h"

typedef struct conn_worker conn_worker_t;

/*
 * Starts one claimer thread (every worker-interval-ms: ClaimDueOutbound(the provider's channel
 * types, up to worker-batch, a fresh lease owner "<instance-id>:<UUID>" per claim, lease-seconds),
 * each claimed message delivered and completed under that owner, never claiming more than the
 * delivery threads can start soon) and worker-threads delivery threads running conn_deliver.
 * NULL with err.
 */
conn_worker_t *conn_worker_start(conn_t *c, oc_error_t *err);

/*
 * Stops claiming, lets each delivery thread finish the message in its hands, joins them and
 * frees the worker. Messages claimed but not started keep their lease until it expires, then
 * any replica claims them again. NULL is fine.
 */
void conn_worker_stop(conn_worker_t *w);

#endif
