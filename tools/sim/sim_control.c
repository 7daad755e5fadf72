/* The control API pieces every provider simulator shares (sim_control.h). */
#include "sim_control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DELAY_MS 600000L
#define MAX_FAULT_REPEAT 100000L

void sim_send_json(oc_http_response_t *resp, int status, json_t *j)
{
    resp->status = status;
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (txt)
        oc_buf_appends(&resp->body, txt);
    else
        oc_http_response_error(resp, 500, "out of memory");
    free(txt);
    json_decref(j);
}

void sim_send_ok(oc_http_response_t *resp)
{
    sim_send_json(resp, 200, json_pack("{s:b}", "ok", true));
}

/* Parses the body as a JSON object, answering 400 when it is not one. */
json_t *sim_body_object(const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_error_t jerr;
    json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        oc_http_response_error(resp, 400, "body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Reads an optional string field into dst; false (with a 400 sent) when it is not a string or
 * does not fit. */
bool sim_opt_str(const json_t *o, const char *name, char *dst, size_t cap, oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v) || json_string_length(v) >= cap) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be a string shorter than %zu bytes", name, cap);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return true;
}

bool sim_opt_int(const json_t *o, const char *name, long min, long max, long *dst,
                 oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be an integer between %ld and %ld", name, min, max);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    *dst = (long)json_integer_value(v);
    return true;
}

bool sim_opt_bool(const json_t *o, const char *name, bool *dst, bool *present,
                  oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (present) *present = v != NULL;
    if (!v) return true;
    if (!json_is_boolean(v)) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be a boolean", name);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    *dst = json_is_true(v);
    return true;
}

/* POST /__sim/faults {"path": "...", "faults": [{...}, ...]} */
void sim_post_faults(sim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    if (!root) return;
    sim_fault_t *parsed = NULL;
    long *repeat = NULL;
    const char *path = json_string_value(json_object_get(root, "path"));
    const json_t *arr = json_object_get(root, "faults");
    if (!path || path[0] != '/' || strlen(path) >= sizeof parsed->path) {
        oc_http_response_error(resp, 400, "path: must be an absolute path under 256 bytes");
        goto out;
    }
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        oc_http_response_error(resp, 400, "faults: must be a non-empty array");
        goto out;
    }
    size_t n = json_array_size(arr);
    repeat = calloc(n, sizeof *repeat);
    parsed = calloc(n, sizeof *parsed);
    if (!parsed || !repeat) {
        oc_http_response_error(resp, 500, "out of memory");
        goto out;
    }
    /* Validate the whole list before queueing any of it, so a bad entry queues nothing. */
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        sim_fault_t *f = &parsed[i];
        long status = 0;
        bool has_exec = false;
        repeat[i] = 1;
        if (!json_is_object(o)) {
            oc_http_response_error(resp, 400, "faults[]: must be objects");
            goto out;
        }
        snprintf(f->path, sizeof f->path, "%s", path);
        if (!sim_opt_int(o, "status", 100, 599, &status, resp) ||
            !sim_opt_int(o, "delay_ms", 0, MAX_DELAY_MS, &f->delay_ms, resp) ||
            !sim_opt_int(o, "hold_ms", 0, MAX_DELAY_MS, &f->hold_ms, resp) ||
            !sim_opt_int(o, "repeat", 1, MAX_FAULT_REPEAT, &repeat[i], resp) ||
            !sim_opt_bool(o, "drop", &f->drop, NULL, resp) ||
            !sim_opt_bool(o, "execute", &f->execute, &has_exec, resp) ||
            !sim_opt_str(o, "message", f->message, sizeof f->message, resp))
            goto out;
        f->status = (int)status;
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (json_object_get(o, "kind") != NULL) {
            for (int k = 1; kind != NULL && s->kind_name != NULL && s->kind_name(k) != NULL; k++)
                if (strcmp(kind, s->kind_name(k)) == 0) f->kind = k;
            if (f->kind == 0) {
                oc_http_response_error(resp, 400, "kind: not a fault kind of this simulator");
                goto out;
            }
        }
        /* A fault that answers for the provider (status, kind or drop) skips the work unless told
         * otherwise; a pure delay or hold is a slow provider that still does the work. */
        if (!has_exec) f->execute = !(f->status || f->drop || f->kind);
        if (!f->execute && !f->status && !f->drop && !f->kind) {
            oc_http_response_error(resp, 400,
                                   "a fault with \"execute\": false needs \"status\" or \"drop\"");
            goto out;
        }
    }
    long queued = 0;
    for (size_t i = 0; i < n; i++) {
        for (long r = 0; r < repeat[i]; r++) {
            if (sim_push_fault(s, &parsed[i]) != OC_OK) {
                oc_http_response_error(resp, 500, "out of memory");
                goto out;
            }
            queued++;
        }
    }
    sim_send_json(resp, 200, json_pack("{s:I}", "queued", (json_int_t)queued));
out:
    free(repeat);
    free(parsed);
    json_decref(root);
}

void sim_get_faults(sim_t *s, oc_http_response_t *resp)
{
    char *txt = sim_faults_json(s);
    if (txt)
        oc_buf_appends(&resp->body, txt);
    else
        oc_http_response_error(resp, 500, "out of memory");
    free(txt);
}

/* GET /__sim/requests?path=&limit= and GET /__sim/deliveries?to=&limit= */
void sim_dump_log(sim_t *s, sim_ring_t *ring, const char *key, const oc_http_request_t *req,
                  oc_http_response_t *resp)
{
    const char *lim = oc_http_query(req, "limit");
    size_t limit = 0;
    if (lim) {
        char *end;
        unsigned long long v = strtoull(lim, &end, 10);
        if (*lim == '\0' || *end != '\0') {
            oc_http_response_error(resp, 400, "limit: must be a number");
            return;
        }
        limit = (size_t)v;
    }
    if (sim_dump(s, ring, key, limit, &resp->body) != OC_OK) {
        oc_buf_reset(&resp->body);
        oc_http_response_error(resp, 500, "log too large for one response; use ?limit=");
    }
}

void sim_post_clock(sim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    if (!root) return;
    const json_t *v = json_object_get(root, "advance_ms");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        oc_http_response_error(resp, 400, "advance_ms: must be a non-negative integer");
    } else {
        pthread_mutex_lock(&s->mu);
        s->clock_offset_ms += (int64_t)json_integer_value(v);
        int64_t off = s->clock_offset_ms;
        pthread_mutex_unlock(&s->mu);
        sim_send_json(resp, 200, json_pack("{s:I}", "offset_ms", (json_int_t)off));
    }
    json_decref(root);
}
