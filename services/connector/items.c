/* What the providers' webhook parsers and account look-ups share (items.h). */
#include "items.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "omnichat/json_lenient.h"
#include "omnichat/util.h"

json_t *conn_json_body(const char *body, size_t len, oc_error_t *err)
{
    oc_error_t jerr;
    json_t *root;

    oc_error_clear(&jerr);
    root = oc_json_lenient_load(body, len, &jerr);
    if (root == NULL) {
        oc_error_set(err, jerr.code, "%s", jerr.msg);
    } else if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
        oc_error_set(err, OC_E_INVALID, "body: not a JSON object");
    }
    return root;
}

const char *conn_json_id(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    const char *s = json_string_value(v);

    if (s == NULL || s[0] == '\0' || json_string_length(v) > CONN_ID_MAX ||
        strlen(s) != json_string_length(v))
        return NULL;
    return s;
}

const char *conn_json_text(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    const char *s = json_string_value(v);

    if (s == NULL || s[0] == '\0' || strlen(s) != json_string_length(v) ||
        strlen(s) > CONN_TEXT_MAX)
        return NULL;
    return s;
}

char *conn_json_struct(oc_arena_t *arena, const json_t *obj, const char *id_key)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII), *out = NULL;

    if (s != NULL && strlen(s) > CONN_STRUCT_MAX) {
        /* Far beyond anything a provider sends; keep the identity, not the bulk. */
        free(s);
        json_t *small = json_pack("{s:O?,s:O?,s:b}", id_key, json_object_get(obj, id_key), "type",
                                  json_object_get(obj, "type"), "truncated", 1);
        s = small != NULL ? json_dumps(small, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(small);
    }
    if (s != NULL) out = oc_arena_strdup(arena, s);
    free(s);
    return out;
}

void conn_batch_invalid(conn_batch_t *b, size_t index, const char *why)
{
    if (b->invalid++ == 0) {
        b->first_invalid_index = index;
        b->first_invalid_reason = why;
    }
}

const char *conn_display_name(oc_arena_t *arena, const char *name)
{
    const char *copy =
        name != NULL && strlen(name) <= CONN_NAME_MAX && oc_utf8_valid(name, strlen(name))
            ? oc_arena_strdup(arena, name)
            : NULL;

    return copy != NULL ? copy : "";
}

bool conn_class_unbuilt(conn_class_t *out)
{
    memset(out, 0, sizeof *out);
    out->outcome = CONN_OUT_RETRY;
    out->category = PBE(ERROR_CATEGORY__ERROR_CATEGORY_INTERNAL_ERROR);
    snprintf(out->detail, sizeof out->detail, "request could not be built");
    return false;
}

bool conn_class_finish(oc_err_t rc, oc_http_result_t *res,
                       void (*classify)(const oc_http_result_t *res, long timeout_ms,
                                        conn_class_t *out),
                       long timeout_ms, conn_class_t *out)
{
    if (rc == OC_OK) classify(res, timeout_ms, out);
    oc_http_result_dispose(res);
    return rc == OC_OK ? true : conn_class_unbuilt(out);
}

oc_err_t conn_verify_reached(oc_rpc_ctx_t *ctx, const oc_http_result_t *res, const char *provider)
{
    if (res->transport == OC_HTTP_TX_OK) return OC_OK;
    return oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "%s: %s, retry", provider,
                        res->transport == OC_HTTP_TX_TIMEOUT ? "timed out"
                                                             : "could not be reached");
}

oc_err_t conn_verified_from(oc_rpc_ctx_t *ctx, const oc_http_result_t *res, const char *id_key,
                            const char *name_key, const char *provider, conn_verified_t *v)
{
    json_t *root = json_loadb(res->body.data != NULL ? res->body.data : "", res->body.len, 0, NULL);
    const char *id = json_string_value(json_object_get(root, id_key));
    oc_err_t rc = OC_OK;

    if (id == NULL || id[0] == '\0' || strlen(id) >= sizeof v->external_account_id) {
        rc = oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "%s: answer without an id", provider);
    } else {
        strcpy(v->external_account_id, id);
        v->display_name = (char *)conn_display_name(
            ctx->arena, json_string_value(json_object_get(root, name_key)));
    }
    json_decref(root);
    return rc;
}
