/* omnichat-bench-line: declarations shared by the LINE connector benchmark's modules. */
#ifndef BL_H
#define BL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "benchlib.h" /* bench_run & co.: timed phases of N callers */
#include "omnichat/buf.h"
#include "omnichat/http_client.h"
#include "omnichat/pb.h"
#include "omnichat/rpc.h"

#define BL_PST "/omnichat.persistence.v1.Persistence/"
#define BL_CONN "/omnichat.connector.v1.Connector/"
#define BL_CALL_TIMEOUT_MS 30000
#define BL_MAX_K 100             /* events per POST / messages per PersistInbound */
#define BL_BODY_MAX (256 * 1024) /* one webhook body of BL_MAX_K events fits easily */
#define BL_ID_LEN 40             /* provider message ids ("18 digits") with room to spare */
#define BL_MAX_USERS_PER_CHANNEL 4096

/* One connected channel: a tenant's channel account, its account at the provider's simulator
 * and its credentials (the driver fills the provider's fields). */
typedef struct bl_channel {
    char tenant[37];
    char account[37];
    char provider_account[64]; /* the provider's id of the account (LINE: the bot's user id) */
    char token[64];            /* access token (random, registered in the simulator) */
    char secret[128];          /* webhook signing secret (random, or the app secret) */
    char webhook_url[256];
    int first_user, nusers; /* its users: ctx->users[first_user .. first_user+nusers) */
} bl_channel_t;

/* A provider user who wrote to one channel once, so that a conversation exists. */
typedef struct bl_user {
    char id[48]; /* the provider's user id (LINE: U + 32 hex) */
    char conversation[37];
    char display_name[32]; /* what the simulator's profile answers ("User xxxxxx") */
    char avatar[128];
    int channel;
} bl_user_t;

/* Per-caller state of a phase: the HTTP client, a body buffer, what it saw. */
typedef struct bl_thread {
    oc_http_client_t *http; /* shared by all threads, a keep-alive handle per thread */
    char *body;             /* BL_BODY_MAX bytes */
    uint64_t rng;
    /* SendText: provider message ids of the SENT replies, BL_ID_LEN bytes each. */
    char *sent_ids;
    size_t nsent, capsent;
    uint64_t by_status[8]; /* SendText replies by MessageStatus */
    uint64_t items_ok;     /* events (or messages) in successful calls */
    uint64_t items_failed; /* events in failed calls (they may or may not be stored) */
    uint64_t http_other;   /* POSTs answered with a status other than 200 */
    uint64_t http_503;     /* of those, answered 503 (not stored: the provider redelivers) */
    int last_http_status;
    /* Webhook: the outcome of this thread's POST number seq: 1 answered 200, 2 failed. */
    uint8_t *post_ok;
    size_t npost, cappost;
} bl_thread_t;

typedef struct bl_driver bl_driver_t;

typedef struct bl_ctx {
    const bl_driver_t *drv; /* the provider under test */
    char app_secret[128];   /* a per-app webhook secret (Meta), from --app-secret-file */
    const char *connector_target, *persistence_target, *webhook_base, *sim_base, *super_dsn;
    pid_t connector_pid, persistence_pid, sim_pid, postmaster_pid;
    int threads;
    bool ordered_batches; /* sort each batch's users (an experiment: see --ordered-batches) */
    char run[12];         /* short random run id: part of every key, so keys never repeat */
    oc_rpc_client_t *conn, *pst;
    bl_channel_t *ch;
    int nch;
    bl_user_t *users;
    int nusers;
    bl_thread_t th[BENCH_MAX_THREADS];
} bl_ctx_t;

typedef enum bl_kind {
    BL_SENDTEXT,     /* Connector/SendText, one text, unique idempotency key */
    BL_WEBHOOK,      /* a signed LINE webhook POST of k message events */
    BL_RAW_PUSH,     /* reference: POST /v2/bot/message/push straight to the simulator */
    BL_PST_OUTBOUND, /* reference: CreateOutbound + CompleteOutbound(SENT), as SendText does */
    BL_PST_INBOUND,  /* reference: PersistInbound of k messages, as the webhook does */
} bl_kind_t;

#define BL_HEADERS_MAX 6
/* Header lines of one request, and their storage. */
typedef struct bl_headers {
    const char *line[BL_HEADERS_MAX + 1]; /* NULL-terminated */
    char buf[BL_HEADERS_MAX][160];
} bl_headers_t;

/* The user argument of bench_run for bl_call. */
typedef struct bl_job {
    bl_ctx_t *ctx;
    bl_kind_t kind;
    int k;       /* events per POST / messages per PersistInbound (1 otherwise) */
    char tag[8]; /* part of every key of the phase, so phases never collide */
} bl_job_t;

/* ---- calls.c: one call of each kind, and the HTTP helper ---- */

/* bench_call_fn for every kind (user = bl_job_t). Thread-safe for distinct threads. */
bool bl_call(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err, size_t errlen);

/*
 * One HTTP request on handle h (reset first, so connections stay alive). headers is
 * NULL-terminated (or NULL); body NULL means GET. The response body goes to out (optional,
 * appended). Returns the HTTP status, or -1 with err set when no answer came. Blocks.
 */
int bl_http(oc_http_client_t *c, const char *url, const char *const *headers, const char *body,
            size_t blen, long timeout_ms, oc_buf_t *out, char *err, size_t errlen);

/* A signed webhook's header lines: JSON, the signature header "<sig_header>: <sig>", the
 * provider's user agent, no Expect. */
void bl_webhook_headers(bl_headers_t *h, const char *sig_header, const char *sig,
                        const char *user_agent);
/* POST {sim_base}<path> with a JSON body to the simulator's control API. 0, or -1 with err. */
int bl_sim_post(bl_ctx_t *ctx, const char *path, const char *json, char *err, size_t errlen);
/* Random lowercase hex: n characters and a NUL into out. */
void bl_rand_hex(uint64_t *rng, char *out, size_t n);
/* The text of webhook events and of the PersistInbound reference (about 80 bytes). */
void bl_inbound_text(char *buf, size_t cap, uint64_t n);
/* The text of provider sends in the raw-send reference (the size of an agent's reply). */
void bl_reply_text(char *buf, size_t cap, uint64_t n);

/* Unary gRPC call with the benchmark's deadline; false with err "Method: STATUS: message". */
bool bl_rpc(oc_rpc_client_t *c, const char *path, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *desc, oc_arena_t *arena, ProtobufCMessage **resp,
            char *err, size_t errlen);

/* Zeroes the per-phase counters of every thread (keeps handles and buffers). */
void bl_threads_reset(bl_ctx_t *ctx);

/* ---- the provider driver: everything the benchmark knows of one provider ---- */

struct bl_driver {
    const char *name;      /* --provider: "line" */
    bool needs_app_secret; /* webhooks are signed with one secret per app (--app-secret-file) */
    /* Optional: prepares the simulator once before any channel (0, or -1 with err). */
    int (*prepare)(bl_ctx_t *ctx, char *err, size_t errlen);
    /* Gives channel number i its provider account id and credentials (random) and registers
     * them at the provider's simulator. 0, or -1 with err. */
    int (*add_channel)(bl_ctx_t *ctx, bl_channel_t *c, int i, char *err, size_t errlen);
    /* Sets the provider's fields of Connector/ConnectChannel for channel c. */
    void (*connect_request)(const bl_channel_t *c, CPB(ConnectChannelRequest) * req);
    /* A new user of channel c: the provider's user id, and the display name and avatar URL the
     * simulator's profile answers (so the PersistInbound reference stores what the connector
     * stores). */
    void (*new_user)(const bl_channel_t *c, uint64_t *rng, bl_user_t *u);
    /* The conversation thread key of user u of channel c, as the connector stores it. */
    void (*thread_key)(const bl_channel_t *c, const bl_user_t *u, char *out, size_t cap);
    /* A signed webhook of k text events from users[j] of channel c, with provider message ids
     * "<id_prefix>-<j>": the body into buf (cap bytes) and the request's header lines into h.
     * Returns the body's length, 0 when it does not fit. */
    size_t (*webhook)(const bl_ctx_t *ctx, const bl_channel_t *c, const int *users, int k,
                      const char *id_prefix, uint64_t *rng, char *buf, size_t cap, bl_headers_t *h);
    /* Reference: one send straight to the simulator, as the connector makes it (text n). The
     * HTTP status, or -1 with err when no answer came; the answer's body in resp. */
    int (*raw_send)(bl_ctx_t *ctx, bl_thread_t *t, const bl_channel_t *c, const bl_user_t *u,
                    uint64_t n, oc_buf_t *resp, char *err, size_t errlen);
    /* Of one entry of the simulator's delivery log (GET /__sim/deliveries?to=USER, the
     * simulator core's): the provider message id and the provider's de-duplication
     * key of the send ("" when the provider has none). Pointers into the entry. */
    void (*delivery_fields)(const void *json_entry, const char **id, const char **dedupe_key);
};

/* The drivers this benchmark has; bl_driver_find("line"). NULL when unknown. */
extern const bl_driver_t bl_driver_line;
extern const bl_driver_t bl_driver_meta;
const bl_driver_t *bl_driver_find(const char *name);

/* ---- setup.c: provider accounts, channels, conversations ---- */

/* Prepares per-thread handles, registers nch accounts in the simulator, connects them through
 * Connector/ConnectChannel (tenants round-robin over ntenants), delivers one signed webhook per
 * user (nusers spread over the channels) and reads back every conversation id. 0 or -1. */
int bl_setup(bl_ctx_t *ctx, int ntenants, int nch, int nusers, char *err, size_t errlen);
/* POST /__sim/reset: empties the simulator's request and delivery logs. 0 or -1. */
int bl_sim_reset(bl_ctx_t *ctx, char *err, size_t errlen);
void bl_ctx_dispose(bl_ctx_t *ctx);

/* ---- verify.c: did every send and every event land exactly once? ---- */

typedef struct bl_send_check {
    bool done;
    uint64_t replies_sent;   /* SendText replies with status SENT */
    uint64_t deliveries;     /* pushes the simulator executed (its delivery log) */
    uint64_t matched;        /* SENT replies whose provider id is in the delivery log once */
    uint64_t missing;        /* SENT replies with no delivery */
    uint64_t extra;          /* deliveries no SENT reply accounts for */
    uint64_t dup_ids;        /* provider ids delivered more than once */
    uint64_t dup_retry_keys; /* retry keys executed more than once */
    uint64_t db_sent;        /* rows of the phase in the database with status sent */
    uint64_t db_total;       /* rows of the phase in the database, any status */
    bool exact;              /* replies == deliveries == matched == db_sent, no dups */
    char error[BENCH_ERR_LEN];
} bl_send_check_t;

typedef struct bl_ingest_check {
    bool done;
    uint64_t expected;         /* events in POSTs answered 200 */
    uint64_t failed_events;    /* events in POSTs that failed (LINE would redeliver them) */
    uint64_t rows;             /* inbound rows carrying the phase's message ids */
    uint64_t stored_accepted;  /* events of 200 POSTs found stored */
    uint64_t missing;          /* events of 200 POSTs not stored */
    uint64_t duplicates;       /* rows beyond the first for one event */
    uint64_t stored_of_failed; /* events of failed POSTs stored anyway (committed late) */
    uint64_t unparsed;         /* rows whose id does not name a POST of the phase */
    bool exact;                /* missing == duplicates == unparsed == 0 */
    char error[BENCH_ERR_LEN];
} bl_ingest_check_t;

/* Compares the SENT replies of the SendText phase (tag) with the simulator's delivery log and
 * the database. Blocks (one GET per user). */
void bl_verify_sends(bl_ctx_t *ctx, const char *tag, bl_send_check_t *out);
/* Reads every inbound row whose provider id starts with id_prefix (superuser, no RLS) and
 * matches each to the POST that carried it (per-thread post_ok marks, k events per POST). */
void bl_verify_ingest(bl_ctx_t *ctx, const char *id_prefix, int k, bl_ingest_check_t *out);
/* CHECKPOINT as superuser before a write phase; 0 or -1. */
int bl_checkpoint(bl_ctx_t *ctx, char *err, size_t errlen);
/* One bigint from a query run as superuser; -1 on failure. */
long long bl_sql_count(bl_ctx_t *ctx, const char *sql, char *err, size_t errlen);

/* ---- report.c ---- */

/* CPU seconds of each process during a phase. */
typedef struct bl_cpu {
    double self_s, conn_s, pst_s, sim_s, pg_s, other_s;
} bl_cpu_t;

typedef struct bl_phase {
    const char *key;   /* JSON key: "sendtext", "webhook_k1", "ref_raw_push", ... */
    const char *title; /* a row title */
    const char *unit;  /* "sends/s", "events/s", ... */
    const char *per;   /* the item CPU is counted per ("send", "event", "push", ...) */
    bool ran;
    bool reference;
    int k;             /* items per call */
    double items_rate; /* items (sends, events, pairs) per second */
    uint64_t items;
    bench_stats_t st;
    bl_cpu_t cpu;
    uint64_t http_other;
    uint64_t http_503; /* webhook POSTs answered 503 (failures: the events were not stored) */
    int last_http_status;
    long long deadlocks; /* pg_stat_database.deadlocks during the phase; -1 unknown */
} bl_phase_t;

typedef struct bl_target {
    char what[96];
    char target[48];
    char measured[160];
    bool pass;
    bool measured_ok;
} bl_target_t;

enum {
    BL_PH_SENDTEXT,
    BL_PH_REF_PUSH,
    BL_PH_REF_OUTBOUND,
    BL_PH_WEBHOOK_K1,
    BL_PH_REF_INBOUND_K1,
    BL_PH_WEBHOOK_K10,
    BL_PH_REF_INBOUND_K10,
    BL_PH__COUNT
};

typedef struct bl_report {
    int duration_s, ref_duration_s, threads, ncpu;
    int ntenants, nch, nusers, k_big;
    bl_phase_t ph[BL_PH__COUNT];
    bl_send_check_t sends;
    bl_ingest_check_t ingest_k1, ingest_k10;
    bl_target_t targets[8];
    int ntargets;
    long hwm_conn_kb, hwm_pst_kb, hwm_sim_kb;
    long rss_idle_conn_kb, rss_idle_pst_kb;
    long pg_connections; /* backends after the run */
    char loadavg_start[64], loadavg_end[64];
    char notes[8][640];
    int nnotes;
    char flags[512];            /* how the services were started (from the script) */
    bench_issue_row_t issue[8]; /* "Targets (issue 10)": the issue's rows this run measures */
    int nissue;
} bl_report_t;

void bl_report_print(const bl_report_t *r, FILE *f);
int bl_report_json(const bl_report_t *r, const char *path);
int bl_report_markdown(const bl_report_t *r, const char *path);

#endif
