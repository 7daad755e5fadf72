/* PostgreSQL pool: one connection per slot, prepared statements, one round trip per transaction. */
#ifndef OMNICHAT_PG_H
#define OMNICHAT_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/err.h"

typedef struct oc_pg_pool oc_pg_pool_t;
typedef struct oc_pg_conn oc_pg_conn_t;
/* A query result (a libpq PGresult; service code never sees libpq). */
typedef struct oc_pg_result oc_pg_result_t;

typedef struct oc_pg_stmt {
    const char *name; /* prepared statement name */
    const char *sql;
    unsigned flags; /* OC_PG_IDEMPOTENT or 0 */
} oc_pg_stmt_t;

/*
 * The statement may run twice: the second run leaves the rows as the first left them and
 * answers as a caller retrying the same request would be answered (an upsert or insert keyed
 * by an idempotency key, a read, an update to a fixed value). Only then may
 * oc_pg_pool_exec_tx replay a transaction whose connection was lost while it committed.
 * Without the flag (the default), such a transaction fails with OC_E_UNAVAILABLE instead.
 */
#define OC_PG_IDEMPOTENT 0x1u

/*
 * Creates a pool of `size` connection slots to `conninfo` (libpq keywords or URI). Connections
 * are made lazily and remade after the server restarts; every statement in `stmts` (the array
 * must outlive the pool) is prepared on each new connection. Nothing connects here, so a pool
 * can be created while the database is down. NULL with err on bad arguments or OOM.
 */
oc_pg_pool_t *oc_pg_pool_create(const char *conninfo, size_t size, const oc_pg_stmt_t *stmts,
                                size_t nstmts, oc_error_t *err);
void oc_pg_pool_destroy(oc_pg_pool_t *p);

/*
 * Takes a slot, waiting at most timeout_ms for one, and makes sure it is connected (connecting
 * and preparing statements if needed, bounded by the conninfo's connect_timeout). An idle
 * connection that the server closed meanwhile (a restart) is found by a non-blocking read and
 * remade here, before any statement is sent on it. Returns NULL
 * with OC_E_UNAVAILABLE when the database cannot be reached or no slot frees up in time.
 * Thread-safe.
 */
oc_pg_conn_t *oc_pg_acquire(oc_pg_pool_t *p, int timeout_ms, oc_error_t *err);
/* Returns a slot to the pool. Thread-safe. NULL is fine. */
void oc_pg_release(oc_pg_pool_t *p, oc_pg_conn_t *c);

/* Slots in use / total, for metrics. */
void oc_pg_pool_stats(oc_pg_pool_t *p, size_t *in_use, size_t *size);
/* Since the pool was made: acquires that had to wait for a free slot (counted once each, also
 * when they then timed out) and the seconds they waited in all, for metrics. */
void oc_pg_pool_wait_stats(oc_pg_pool_t *p, uint64_t *waits, double *wait_seconds);

/* One statement of a transaction: a prepared statement and its text-format parameters. */
typedef struct oc_pg_query {
    const char *stmt; /* prepared statement name (from the pool's table) */
    int nparams;
    const char *const *values; /* NULL entry = SQL NULL */
    oc_pg_result_t *res;       /* out: the rows; free with oc_pg_result_free */
} oc_pg_query_t;

/*
 * Runs q[0..n) as one transaction in one round trip (libpq pipeline, implicit transaction).
 * When tenant_id is not NULL, set_config('omnichat.tenant_id', tenant_id, true) runs first, so
 * row-level security sees the tenant. All-or-nothing: on any error nothing is committed and no
 * q[i].res is left set. Serialization failures and deadlocks are retried (up to 3 tries).
 *
 * Errors, classified by SQLSTATE: 23505 → OC_E_ALREADY_EXISTS; 22xxx, 23502, 23514, 23503 →
 * OC_E_INVALID; 08xxx, 57P0x, 53xxx, a lost connection → OC_E_UNAVAILABLE (the connection is
 * remade on next acquire); 57014 (statement timeout) → OC_E_DEADLINE; 40001/40P01 after the
 * retries → OC_E_CONFLICT. Errors raised by our own SQL functions use SQLSTATEs OCIA0
 * (OC_E_INVALID), OCNF0 (OC_E_NOT_FOUND), OCAE0 (OC_E_ALREADY_EXISTS) and OCFP0
 * (OC_E_FAILED_PRECONDITION); their message text is passed to err as is (it names the field
 * and never holds data). Anything else is OC_E_INTERNAL with a generic message (the server's
 * text is logged by the caller's log hook, not returned).
 */
oc_err_t oc_pg_exec_tx(oc_pg_conn_t *c, const char *tenant_id, oc_pg_query_t *q, size_t n,
                       oc_error_t *err);

/*
 * oc_pg_acquire + oc_pg_exec_tx + oc_pg_release, and one retry on a fresh connection when the
 * connection failed under the transaction: always when it certainly did not commit, and when
 * the loss came during the commit only if every statement of q is OC_PG_IDEMPOTENT. This is
 * what makes the first call after a database restart succeed even when a pooled connection
 * died in a way the pre-use check (oc_pg_acquire) could not see. Errors as oc_pg_exec_tx, plus
 * those of oc_pg_acquire. Blocks; thread-safe.
 */
oc_err_t oc_pg_pool_exec_tx(oc_pg_pool_t *p, int timeout_ms, const char *tenant_id,
                            oc_pg_query_t *q, size_t n, oc_error_t *err);

/* Simple statement (not prepared, no parameters, autocommit) for admin tasks like migrations.
 * *res (optional) receives the last result. */
oc_err_t oc_pg_exec_simple(oc_pg_conn_t *c, const char *sql, oc_pg_result_t **res, oc_error_t *err);

void oc_pg_result_free(oc_pg_result_t *r);
int oc_pg_ntuples(const oc_pg_result_t *r);
int oc_pg_nfields(const oc_pg_result_t *r);
/* Text value of row/col ("" for NULL); valid until the result is freed. */
const char *oc_pg_value(const oc_pg_result_t *r, int row, int col);
int oc_pg_length(const oc_pg_result_t *r, int row, int col);
bool oc_pg_isnull(const oc_pg_result_t *r, int row, int col);
/* Column index by name, -1 when absent. */
int oc_pg_fnumber(const oc_pg_result_t *r, const char *name);
/* The same, trying *hint first (a column number the caller found for this name before, checked
 * by name) and leaving the answer there: one strcmp instead of a scan of every column when a
 * statement's rows are converted one by one. Any int is a valid hint. */
int oc_pg_fnumber_hint(const oc_pg_result_t *r, const char *name, int *hint);
/* The text of column `name` (found as oc_pg_fnumber_hint does) in row, NULL when the column is
 * absent or the value is NULL; *len (may be NULL) gets its length. One call per cell. */
const char *oc_pg_cell(const oc_pg_result_t *r, int row, const char *name, int *hint, int *len);

/* A standalone connection outside any pool (migrations, tools). */
oc_pg_conn_t *oc_pg_connect(const char *conninfo, oc_error_t *err);
void oc_pg_disconnect(oc_pg_conn_t *c);

/*
 * Optional hook receiving every database error for logging; no argument is ever NULL or empty:
 *   sqlstate  the server's SQLSTATE, "08000" for a failed connect, or the cause when there is
 *             no SQLSTATE (libpq's own errors);
 *   cause     "server_error" (the server refused a statement), "connection_lost" (the
 *             connection broke: EOF, reset, terminated by the server), "connect_failed", or
 *             "client_error" (libpq failed locally, the connection is still up);
 *   detail    the server's primary message, or libpq's, on one line.
 * Errors raised by our own SQL functions (SQLSTATE OC...) are answers, not faults: not passed.
 * Set once from main before threads start.
 */
typedef void (*oc_pg_log_hook_fn)(const char *sqlstate, const char *cause, const char *detail);
void oc_pg_set_log_hook(oc_pg_log_hook_fn hook);

#endif
