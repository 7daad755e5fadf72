/* The control API pieces every provider simulator shares (under /__sim/): JSON answers and
 * request fields, the fault queue, the logs, the clock. */
#ifndef OMNICHAT_SIM_CONTROL_H
#define OMNICHAT_SIM_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "omnichat/http.h"
#include "sim.h"

/* Answers status with j as the body (j is released); 500 when j is NULL. */
void sim_send_json(oc_http_response_t *resp, int status, json_t *j);
/* Answers 200 {"ok": true}. */
void sim_send_ok(oc_http_response_t *resp);
/* The body as a JSON object, or NULL with a 400 sent. */
json_t *sim_body_object(const oc_http_request_t *req, oc_http_response_t *resp);
/* Optional members: false with a 400 sent when present but of the wrong type or range. */
bool sim_opt_str(const json_t *o, const char *name, char *dst, size_t cap,
                 oc_http_response_t *resp);
bool sim_opt_int(const json_t *o, const char *name, long min, long max, long *dst,
                 oc_http_response_t *resp);
bool sim_opt_bool(const json_t *o, const char *name, bool *dst, bool *present,
                  oc_http_response_t *resp);
/* POST /__sim/faults {"path", "faults": [{status, kind, delay_ms, hold_ms, repeat, drop,
 * execute, message}]}: kinds by the simulator's kind_name; all or nothing. */
void sim_post_faults(sim_t *s, const oc_http_request_t *req, oc_http_response_t *resp);
/* GET /__sim/faults */
void sim_get_faults(sim_t *s, oc_http_response_t *resp);
/* GET of a log (?limit=), filtered by key (NULL: all). */
void sim_dump_log(sim_t *s, sim_ring_t *ring, const char *key, const oc_http_request_t *req,
                  oc_http_response_t *resp);
/* POST /__sim/clock {"advance_ms"} */
void sim_post_clock(sim_t *s, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
