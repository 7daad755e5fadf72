/* gRPC server reflection (grpc.reflection.v1 and v1alpha) over an embedded FileDescriptorSet. */
#include "rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "grpc/reflection/v1/reflection.pb-c.h"

/* Bounds on one stream's work: grpcurl and evans send a few dozen requests per session. */
#define MAX_REQUESTS_PER_STREAM 1024
#define MAX_NAME 1024
/* Message nesting followed while indexing; protoc itself stops far below this. */
#define MAX_DEPTH 64
/* What a response needs beyond its files (envelope, echoed request). */
#define RESPONSE_SLACK 8192

#define HEALTH_SERVICE "grpc.health.v1.Health"
#define REFLECT_V1 "grpc.reflection.v1.ServerReflection"
#define REFLECT_V1ALPHA "grpc.reflection.v1alpha.ServerReflection"

typedef Grpc__Reflection__V1__ServerReflectionRequest request_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse response_t;

enum { SYM_MESSAGE, SYM_ENUM, SYM_SERVICE, SYM_METHOD };

typedef struct file {
    char *name;
    const uint8_t *p; /* the serialized FileDescriptorProto, inside the set */
    size_t len;
    size_t *deps; /* indexes into files */
    size_t ndeps;
} file_t;

typedef struct symbol {
    char *name; /* fully qualified, without a leading dot */
    size_t file;
    int kind;
} symbol_t;

struct rpc_reflect {
    file_t *files;
    size_t nfiles;
    symbol_t *syms;
    size_t nsyms, capsyms;
    char **services; /* what list_services answers */
    size_t nservices;
    size_t max_response;
};

/* ---- the descriptor set, read on the wire (no descriptor.proto code needed) ---- */

typedef struct field {
    uint32_t num;
    uint32_t wt;
    const uint8_t *p; /* length-delimited: the bytes */
    size_t len;
} field_t;

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return false;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* The next field of a message in [*p, end): false at the end; *bad on malformed input. */
static bool next_field(const uint8_t **p, const uint8_t *end, field_t *f, bool *bad)
{
    uint64_t key, v;

    if (*p >= end) return false;
    if (!varint(p, end, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX) goto bad;
    f->num = (uint32_t)(key >> 3);
    f->wt = (uint32_t)(key & 7);
    f->p = NULL;
    f->len = 0;
    switch (f->wt) {
    case 0:
        if (!varint(p, end, &v)) goto bad;
        return true;
    case 1:
        if (end - *p < 8) goto bad;
        *p += 8;
        return true;
    case 5:
        if (end - *p < 4) goto bad;
        *p += 4;
        return true;
    case 2:
        if (!varint(p, end, &v) || v > (uint64_t)(end - *p)) goto bad;
        f->p = *p;
        f->len = (size_t)v;
        *p += v;
        return true;
    default:
        goto bad;
    }
bad:
    *bad = true;
    return false;
}

static char *join(const char *prefix, const uint8_t *name, size_t n)
{
    size_t pn = prefix ? strlen(prefix) : 0;
    char *s = malloc(pn + 1 + n + 1);
    if (!s) return NULL;
    if (pn) {
        memcpy(s, prefix, pn);
        s[pn++] = '.';
    }
    memcpy(s + pn, name, n);
    s[pn + n] = '\0';
    return s;
}

static bool add_symbol(rpc_reflect_t *r, char *name, size_t file, int kind)
{
    if (!name) return false;
    if (r->nsyms == r->capsyms) {
        size_t cap = r->capsyms ? r->capsyms * 2 : 64;
        symbol_t *n = realloc(r->syms, cap * sizeof(*n));
        if (!n) {
            free(name);
            return false;
        }
        r->syms = n;
        r->capsyms = cap;
    }
    r->syms[r->nsyms++] = (symbol_t){name, file, kind};
    return true;
}

/* The name (field 1) of a DescriptorProto, EnumDescriptorProto, ServiceDescriptorProto or
 * MethodDescriptorProto. */
static bool name_of(const uint8_t *p, size_t len, const uint8_t **name, size_t *n, bool *bad)
{
    const uint8_t *end = p + len;
    field_t f;
    *name = NULL;
    while (next_field(&p, end, &f, bad))
        if (f.num == 1 && f.wt == 2) {
            *name = f.p;
            *n = f.len;
        }
    return *name != NULL && !*bad;
}

/* A message type and, recursively, its nested messages (3) and enums (4). */
static bool index_message(rpc_reflect_t *r, const char *scope, const uint8_t *p, size_t len,
                          size_t file, int depth, bool *bad)
{
    const uint8_t *name, *end = p + len;
    size_t n;
    field_t f;

    if (depth > MAX_DEPTH || !name_of(p, len, &name, &n, bad)) return false;
    char *full = join(scope, name, n);
    if (!add_symbol(r, full, file, SYM_MESSAGE)) return false;
    while (next_field(&p, end, &f, bad)) {
        if (f.wt != 2) continue;
        if (f.num == 3 && !index_message(r, full, f.p, f.len, file, depth + 1, bad)) return false;
        if (f.num == 4) {
            if (!name_of(f.p, f.len, &name, &n, bad)) return false;
            if (!add_symbol(r, join(full, name, n), file, SYM_ENUM)) return false;
        }
    }
    return !*bad;
}

static bool index_service(rpc_reflect_t *r, const char *scope, const uint8_t *p, size_t len,
                          size_t file, bool *bad)
{
    const uint8_t *name, *end = p + len;
    size_t n;
    field_t f;

    if (!name_of(p, len, &name, &n, bad)) return false;
    char *full = join(scope, name, n);
    if (!add_symbol(r, full, file, SYM_SERVICE)) return false;
    while (next_field(&p, end, &f, bad)) {
        if (f.num != 2 || f.wt != 2) continue;
        if (!name_of(f.p, f.len, &name, &n, bad)) return false;
        if (!add_symbol(r, join(full, name, n), file, SYM_METHOD)) return false;
    }
    return !*bad;
}

/* One FileDescriptorProto: name (1), package (2), dependencies (3), messages (4), enums (5),
 * services (6). Dependencies are resolved once every file is known. */
static bool index_file(rpc_reflect_t *r, size_t fi, char ***depnames, bool *bad)
{
    file_t *file = &r->files[fi];
    const uint8_t *p = file->p, *end = file->p + file->len;
    char *pkg = NULL;
    field_t f;
    bool ok = false;

    while (next_field(&p, end, &f, bad)) {
        if (f.wt != 2) continue;
        if (f.num == 1 && !file->name) file->name = strndup((const char *)f.p, f.len);
        if (f.num == 2 && !pkg) pkg = strndup((const char *)f.p, f.len);
        if (f.num == 3) {
            /* NULL-terminated, so that it can be freed without the file. */
            char **d = realloc(*depnames, (file->ndeps + 2) * sizeof(*d));
            if (!d) goto out;
            *depnames = d;
            d[file->ndeps] = strndup((const char *)f.p, f.len);
            if (!d[file->ndeps]) goto out;
            d[++file->ndeps] = NULL;
        }
    }
    if (*bad || !file->name) goto out;
    /* The package comes first in protoc's output, but the wire does not promise it. */
    p = file->p;
    while (next_field(&p, end, &f, bad)) {
        if (f.wt != 2) continue;
        const char *scope = pkg && pkg[0] ? pkg : NULL;
        if (f.num == 4 && !index_message(r, scope, f.p, f.len, fi, 0, bad)) goto out;
        if (f.num == 5) {
            const uint8_t *name;
            size_t n;
            if (!name_of(f.p, f.len, &name, &n, bad)) goto out;
            if (!add_symbol(r, join(scope, name, n), fi, SYM_ENUM)) goto out;
        }
        if (f.num == 6 && !index_service(r, scope, f.p, f.len, fi, bad)) goto out;
    }
    ok = !*bad;
out:
    free(pkg);
    return ok;
}

static const symbol_t *find_symbol(const rpc_reflect_t *r, const char *name)
{
    if (name[0] == '.') name++;
    for (size_t i = 0; i < r->nsyms; i++)
        if (strcmp(r->syms[i].name, name) == 0) return &r->syms[i];
    return NULL;
}

static ssize_t find_file(const rpc_reflect_t *r, const char *name)
{
    for (size_t i = 0; i < r->nfiles; i++)
        if (strcmp(r->files[i].name, name) == 0) return (ssize_t)i;
    return -1;
}

void rpc_reflect_destroy(rpc_reflect_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nfiles; i++) {
        free(r->files[i].name);
        free(r->files[i].deps);
    }
    free(r->files);
    for (size_t i = 0; i < r->nsyms; i++)
        free(r->syms[i].name);
    free(r->syms);
    for (size_t i = 0; i < r->nservices; i++)
        free(r->services[i]);
    free(r->services);
    free(r);
}

rpc_reflect_t *rpc_reflect_create(const uint8_t *set, size_t len, char *const *services,
                                  size_t nservices, size_t max_response, oc_error_t *err)
{
    static const char *const builtin[] = {HEALTH_SERVICE, REFLECT_V1, REFLECT_V1ALPHA};
    rpc_reflect_t *r = calloc(1, sizeof(*r));
    char ***depnames = NULL;
    const uint8_t *p = set, *end = set + len;
    bool bad = false;
    size_t nfiles = 0;
    field_t f;

    if (!r) goto nomem;
    r->max_response = max_response;
    for (const uint8_t *q = set; next_field(&q, end, &f, &bad);)
        if (f.num == 1 && f.wt == 2) r->nfiles++;
    if (bad || r->nfiles == 0) goto malformed;
    nfiles = r->nfiles;
    r->files = calloc(r->nfiles, sizeof(*r->files));
    depnames = calloc(r->nfiles, sizeof(*depnames));
    if (!r->files || !depnames) goto nomem;
    for (size_t i = 0; next_field(&p, end, &f, &bad);)
        if (f.num == 1 && f.wt == 2) r->files[i++] = (file_t){.p = f.p, .len = f.len};
    for (size_t i = 0; i < r->nfiles; i++)
        if (!index_file(r, i, &depnames[i], &bad)) goto malformed;
    for (size_t i = 0; i < r->nfiles; i++) {
        file_t *fl = &r->files[i];
        if (fl->ndeps && !(fl->deps = calloc(fl->ndeps, sizeof(*fl->deps)))) goto nomem;
        for (size_t k = 0; k < fl->ndeps; k++) {
            ssize_t d = find_file(r, depnames[i][k]);
            if (d < 0) {
                oc_error_set(err, OC_E_INVALID,
                             "reflection: %s imports %s, which the descriptor set lacks "
                             "(build it with --include_imports)",
                             fl->name, depnames[i][k]);
                goto fail;
            }
            fl->deps[k] = (size_t)d;
        }
    }
    r->services = calloc(nservices + 3, sizeof(*r->services));
    if (!r->services) goto nomem;
    for (size_t i = 0; i < nservices + 3; i++) {
        const char *name = i < nservices ? services[i] : builtin[i - nservices];
        bool listed = false;
        for (size_t k = 0; k < r->nservices; k++)
            listed |= strcmp(r->services[k], name) == 0;
        if (listed) continue; /* a table that serves Health/Check itself */
        const symbol_t *sym = find_symbol(r, name);
        if (!sym || sym->kind != SYM_SERVICE) {
            oc_error_set(err, OC_E_INVALID,
                         "reflection: the descriptor set does not define the service %s", name);
            goto fail;
        }
        if (!(r->services[r->nservices++] = strdup(name))) goto nomem;
    }
    goto done;

malformed:
    oc_error_set(err, OC_E_INVALID, "reflection: malformed descriptor set");
    goto fail;
nomem:
    oc_error_set(err, OC_E_NOMEM, "reflection: out of memory");
fail:
    rpc_reflect_destroy(r);
    r = NULL;
done:
    for (size_t i = 0; depnames && i < nfiles; i++) {
        for (size_t k = 0; depnames[i] && depnames[i][k]; k++)
            free(depnames[i][k]);
        free(depnames[i]);
    }
    free(depnames);
    return r;
}

/* ---- ServerReflectionInfo ---- */

static response_t *error_response(oc_arena_t *a, response_t *resp, int code, const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse *e = oc_arena_alloc(a, sizeof(*e));
    if (!e) return NULL;
    grpc__reflection__v1__error_response__init(e);
    e->error_code = code;
    e->error_message = oc_arena_strdup(a, msg);
    if (!e->error_message) return NULL;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = e;
    return resp;
}

static void collect(const rpc_reflect_t *r, size_t fi, bool *seen, size_t *order, size_t *n)
{
    if (seen[fi]) return;
    seen[fi] = true;
    order[(*n)++] = fi;
    for (size_t k = 0; k < r->files[fi].ndeps; k++)
        collect(r, r->files[fi].deps[k], seen, order, n);
}

/* The file and its transitive dependencies, the file first (what grpcurl expects). */
static response_t *file_response(const rpc_reflect_t *r, oc_arena_t *a, response_t *resp, size_t fi)
{
    bool *seen = oc_arena_alloc(a, r->nfiles * sizeof(*seen));
    size_t *order = oc_arena_alloc(a, r->nfiles * sizeof(*order));
    Grpc__Reflection__V1__FileDescriptorResponse *fd = oc_arena_alloc(a, sizeof(*fd));
    size_t n = 0, total = 0;

    if (!seen || !order || !fd) return NULL;
    memset(seen, 0, r->nfiles * sizeof(*seen));
    collect(r, fi, seen, order, &n);
    grpc__reflection__v1__file_descriptor_response__init(fd);
    fd->file_descriptor_proto = oc_arena_alloc(a, n * sizeof(*fd->file_descriptor_proto));
    if (!fd->file_descriptor_proto) return NULL;
    for (size_t i = 0; i < n; i++) {
        const file_t *f = &r->files[order[i]];
        total += f->len + 8;
        fd->file_descriptor_proto[i] = (ProtobufCBinaryData){f->len, (uint8_t *)f->p};
    }
    fd->n_file_descriptor_proto = n;
    /* A client refuses a response over its receive limit (4 MiB by default), ours included. */
    if (total + RESPONSE_SLACK > r->max_response)
        return error_response(a, resp, 8, "the file and its dependencies exceed the message limit");
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = fd;
    return resp;
}

static response_t *list_services(const rpc_reflect_t *r, oc_arena_t *a, response_t *resp)
{
    Grpc__Reflection__V1__ListServiceResponse *l = oc_arena_alloc(a, sizeof(*l));
    if (!l) return NULL;
    grpc__reflection__v1__list_service_response__init(l);
    l->service = oc_arena_alloc(a, r->nservices * sizeof(*l->service));
    if (!l->service) return NULL;
    for (size_t i = 0; i < r->nservices; i++) {
        Grpc__Reflection__V1__ServiceResponse *s = oc_arena_alloc(a, sizeof(*s));
        if (!s) return NULL;
        grpc__reflection__v1__service_response__init(s);
        s->name = r->services[i];
        l->service[l->n_service++] = s;
    }
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = l;
    return resp;
}

static response_t *answer(const rpc_reflect_t *r, const request_t *q, oc_arena_t *a,
                          response_t *resp)
{
    const char *name = NULL;
    char msg[MAX_NAME + 64];

    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return list_services(r, a, resp);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        name = q->file_by_filename;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        name = q->file_containing_symbol;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        name = q->all_extension_numbers_of_type;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        name = q->file_containing_extension && q->file_containing_extension->containing_type
                   ? q->file_containing_extension->containing_type
                   : "";
        break;
    default:
        return error_response(a, resp, 3, "no request in the message");
    }
    if (!name) name = "";
    if (strlen(name) > MAX_NAME) return error_response(a, resp, 3, "name too long");

    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
        ssize_t fi = find_file(r, name);
        if (fi >= 0) return file_response(r, a, resp, (size_t)fi);
        snprintf(msg, sizeof msg, "file not found: %s", name);
        return error_response(a, resp, 5, msg);
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        const symbol_t *sym = find_symbol(r, name);
        if (sym) return file_response(r, a, resp, sym->file);
        snprintf(msg, sizeof msg, "symbol not found: %s", name);
        return error_response(a, resp, 5, msg);
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
        /* The API declares no extensions: a known message type has none. */
        const symbol_t *sym = find_symbol(r, name);
        if (!sym || sym->kind != SYM_MESSAGE) {
            snprintf(msg, sizeof msg, "type not found: %s", name);
            return error_response(a, resp, 5, msg);
        }
        Grpc__Reflection__V1__ExtensionNumberResponse *e = oc_arena_alloc(a, sizeof(*e));
        if (!e) return NULL;
        grpc__reflection__v1__extension_number_response__init(e);
        e->base_type_name = sym->name;
        resp->message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
        resp->all_extension_numbers_response = e;
        return resp;
    }
    default:
        snprintf(msg, sizeof msg, "extension not found: %s", name);
        return error_response(a, resp, 5, msg);
    }
}

static oc_err_t reflect_start(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    (void)req;
    int *count = oc_arena_alloc(ctx->arena, sizeof(*count));
    if (!count) return oc_error_set(&ctx->err, OC_E_NOMEM, "reflection: out of memory");
    *count = 0;
    oc_rpc_stream_set_data(st, count);
    return OC_OK;
}

static oc_err_t reflect_message(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *msg,
                                oc_arena_t *arena)
{
    const rpc_reflect_t *r = ctx->user;
    int *count = oc_rpc_stream_data(st);
    const request_t *q = (const request_t *)(const void *)msg;
    response_t *resp = oc_arena_alloc(arena, sizeof(*resp));

    if (++*count > MAX_REQUESTS_PER_STREAM)
        return oc_error_set(&ctx->err, OC_E_AGAIN,
                            "reflection: at most %d requests per stream, open a new one",
                            MAX_REQUESTS_PER_STREAM);
    if (!resp) return oc_error_set(&ctx->err, OC_E_NOMEM, "reflection: out of memory");
    grpc__reflection__v1__server_reflection_response__init(resp);
    resp->valid_host = q->host;
    resp->original_request = (request_t *)q;
    if (!answer(r, q, arena, resp))
        return oc_error_set(&ctx->err, OC_E_NOMEM, "reflection: out of memory");
    /* One response per request, and the next request is read only while the queue has room:
     * a full queue here cannot happen, an ended stream can (it is then over anyway). */
    oc_err_t rc = oc_rpc_stream_send(st, &resp->base);
    if (rc == OC_E_AGAIN)
        return oc_error_set(&ctx->err, OC_E_AGAIN, "reflection: responses are not being read");
    return OC_OK;
}

const oc_rpc_stream_handlers_t rpc_reflect_handlers = {
    .client_streaming = true,
    .queue_max = 4,
    .on_start = reflect_start,
    .on_message = reflect_message,
};
