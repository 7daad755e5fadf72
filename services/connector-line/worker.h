/* Retry worker: claims due LINE outbound messages from persistence and delivers them. */
#ifndef LINE_WORKER_H
#define LINE_WORKER_H

#include "line.h"

typedef struct line_worker line_worker_t;

/*
 * Starts one claimer thread (every worker-interval-ms: ClaimDueOutbound(LINE, up to
 * worker-batch, a fresh lease owner "<instance-id>:<UUID>" per claim, lease-seconds), each
 * claimed message delivered and completed under that owner, never claiming more than the
 * delivery threads can start soon) and worker-threads delivery threads running line_deliver.
 * NULL with err.
 */
line_worker_t *line_worker_start(line_t *l, oc_error_t *err);

/*
 * Stops claiming, lets each delivery thread finish the message in its hands, joins them and
 * frees the worker. Messages claimed but not started keep their lease until it expires, then
 * any replica claims them again. NULL is fine.
 */
void line_worker_stop(line_worker_t *w);

#endif
