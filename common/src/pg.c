/* PostgreSQL pool over libpq: lazy (re)connection, prepared statements, pipelined transactions. */
#include "omnichat/pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "omnichat/util.h"

#define SET_TENANT_STMT "oc__set_tenant"
#define MAX_TRIES 3

struct oc_pg_conn {
    PGconn *conn;
    oc_pg_pool_t *pool; /* NULL for standalone connections */
    bool busy;
    bool broken;    /* remake before the next use */
    bool fatal;     /* the server sent FATAL or PANIC outside a query: it is closing the session */
    unsigned epoch; /* the pool's epoch when this connection was made */
    char fatal_state[6];
    char fatal_msg[160];
};

struct oc_pg_pool {
    char *conninfo;
    const oc_pg_stmt_t *stmts;
    size_t nstmts;
    size_t size;
    size_t in_use;
    /* Acquires that found every slot busy, and the time they waited (for metrics). */
    uint64_t waits;
    uint64_t wait_ns;
    oc_pg_conn_t *slots;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /*
     * Bumped when a connection is found lost under a statement. Connections made in an earlier
     * epoch are remade before their next use: when one session died, its siblings most likely
     * died with it (a restart, a failover, a DBA ending every session), and the one retry of
     * oc_pg_pool_exec_tx must not land on one of them before its FATAL message has arrived.
     */
    unsigned epoch;
};

static oc_pg_log_hook_fn log_hook;

void oc_pg_set_log_hook(oc_pg_log_hook_fn hook)
{
    log_hook = hook;
}

/*
 * Reports one database error to the hook with a cause that is never empty. Errors that libpq
 * makes up itself (the server went away, a send failed) carry no SQLSTATE and no primary
 * message field, so the text comes from the result or the connection, and the connection's
 * state says which of "connection_lost" and "client_error" it was.
 */
static void report(PGconn *conn, const PGresult *res, const char *sqlstate, const char *cause)
{
    char detail[512];
    const char *msg = NULL;
    size_t n = 0;

    if (log_hook == NULL) return;
    if (res != NULL) msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if ((msg == NULL || msg[0] == '\0') && res != NULL) msg = PQresultErrorMessage(res);
    if ((msg == NULL || msg[0] == '\0') && conn != NULL) msg = PQerrorMessage(conn);
    if (msg == NULL || msg[0] == '\0')
        msg = conn == NULL || PQstatus(conn) == CONNECTION_BAD
                  ? "connection lost, libpq gave no reason"
                  : "no result from the server, libpq gave no reason";
    /* libpq's texts span lines ("server closed the connection unexpectedly\n\tThis probably
     * means..."): one line, single spaces, no trailing newline. */
    for (const char *p = msg; *p != '\0' && n < sizeof detail - 1; p++) {
        char ch = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (ch == ' ' && (n == 0 || detail[n - 1] == ' ')) continue;
        detail[n++] = ch;
    }
    while (n > 0 && detail[n - 1] == ' ')
        n--;
    detail[n] = '\0';
    if (sqlstate == NULL || sqlstate[0] == '\0') sqlstate = cause;
    log_hook(sqlstate, cause, detail);
}

/*
 * libpq prints notices (e.g. from RAISE NOTICE) on stderr by default; ours are JSON only, so
 * they are dropped. An error that arrives while no query runs comes here too: a server that
 * shuts down sends FATAL 57P01 to every idle session before closing it.
 */
static void on_notice(void *arg, const PGresult *res)
{
    oc_pg_conn_t *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        c->fatal = true;
        snprintf(c->fatal_state, sizeof c->fatal_state, "%s", st != NULL ? st : "");
        snprintf(c->fatal_msg, sizeof c->fatal_msg, "%s", msg != NULL ? msg : "");
    }
}

oc_pg_pool_t *oc_pg_pool_create(const char *conninfo, size_t size, const oc_pg_stmt_t *stmts,
                                size_t nstmts, oc_error_t *err)
{
    oc_pg_pool_t *p = NULL;

    if (conninfo == NULL || size == 0) {
        oc_error_set(err, OC_E_INVALID, "database pool: conninfo and a size are required");
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) goto oom;
    /* The conninfo may hold a password read from a secret file: keep it out of core dumps. */
    p->conninfo = oc_secret_strndup(conninfo, strlen(conninfo));
    p->slots = calloc(size, sizeof *p->slots);
    if (p->conninfo == NULL || p->slots == NULL) goto oom;
    p->stmts = stmts;
    p->nstmts = nstmts;
    p->size = size;
    for (size_t i = 0; i < size; i++)
        p->slots[i].pool = p;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    return p;
oom:
    if (p != NULL) {
        oc_secret_free(p->conninfo);
        free(p->slots);
        free(p);
    }
    oc_error_set(err, OC_E_NOMEM, "database pool: out of memory");
    return NULL;
}

void oc_pg_pool_destroy(oc_pg_pool_t *p)
{
    if (p == NULL) return;
    for (size_t i = 0; i < p->size; i++)
        if (p->slots[i].conn != NULL) PQfinish(p->slots[i].conn);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    oc_secret_free(p->conninfo); /* wipes: it may hold a password */
    free(p->slots);
    free(p);
}

void oc_pg_pool_stats(oc_pg_pool_t *p, size_t *in_use, size_t *size)
{
    pthread_mutex_lock(&p->mu);
    if (in_use != NULL) *in_use = p->in_use;
    if (size != NULL) *size = p->size;
    pthread_mutex_unlock(&p->mu);
}

void oc_pg_pool_wait_stats(oc_pg_pool_t *p, uint64_t *waits, double *wait_seconds)
{
    pthread_mutex_lock(&p->mu);
    if (waits != NULL) *waits = p->waits;
    if (wait_seconds != NULL) *wait_seconds = (double)p->wait_ns / 1e9;
    pthread_mutex_unlock(&p->mu);
}

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static oc_err_t classify_sqlstate(const char *st)
{
    if (st == NULL) return OC_E_UNAVAILABLE; /* no server error: the connection failed */
    if (strncmp(st, "OC", 2) == 0) {
        if (strcmp(st, "OCIA0") == 0) return OC_E_INVALID;
        if (strcmp(st, "OCNF0") == 0) return OC_E_NOT_FOUND;
        if (strcmp(st, "OCAE0") == 0) return OC_E_ALREADY_EXISTS;
        if (strcmp(st, "OCFP0") == 0) return OC_E_FAILED_PRECONDITION;
        return OC_E_INTERNAL;
    }
    if (strcmp(st, "23505") == 0) return OC_E_ALREADY_EXISTS;
    if (strncmp(st, "22", 2) == 0 || strcmp(st, "23502") == 0 || strcmp(st, "23514") == 0 ||
        strcmp(st, "23503") == 0)
        return OC_E_INVALID;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0) return OC_E_CONFLICT;
    if (strcmp(st, "57014") == 0) return OC_E_DEADLINE;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P0", 4) == 0 || strncmp(st, "53", 2) == 0)
        return OC_E_UNAVAILABLE;
    return OC_E_INTERNAL;
}

/* Sets err from a failed result. Our own SQLSTATEs carry caller-facing text; anything else
 * gets a generic message so server internals never reach a client. */
static oc_err_t result_error(PGconn *conn, const PGresult *res, oc_error_t *err)
{
    const char *st = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    oc_err_t code = classify_sqlstate(st);

    if (st == NULL || strncmp(st, "OC", 2) != 0)
        report(conn, res, st,
               PQstatus(conn) == CONNECTION_BAD ? "connection_lost"
               : st != NULL                     ? "server_error"
                                                : "client_error");
    if (st != NULL && strncmp(st, "OC", 2) == 0 && msg != NULL)
        return oc_error_set(err, code, "%s", msg);
    switch (code) {
    case OC_E_UNAVAILABLE:
        return oc_error_set(err, code, "database unavailable");
    case OC_E_CONFLICT:
        return oc_error_set(err, code, "database: concurrent update, retry");
    case OC_E_DEADLINE:
        return oc_error_set(err, code, "database: statement timeout");
    case OC_E_ALREADY_EXISTS:
        return oc_error_set(err, code, "already exists");
    case OC_E_INVALID:
        return oc_error_set(err, code, "request: rejected by a database constraint");
    default:
        return oc_error_set(err, code, "database error");
    }
}

/* Prepares every statement of the table in one round trip. */
static oc_err_t prepare_all(oc_pg_conn_t *c, oc_error_t *err)
{
    const oc_pg_pool_t *p = c->pool;
    oc_err_t rc = OC_OK;
    PGresult *res;

    if (PQenterPipelineMode(c->conn) != 1)
        return oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
    PQsendPrepare(c->conn, SET_TENANT_STMT, "SELECT set_config('omnichat.tenant_id', $1, true)", 1,
                  NULL);
    for (size_t i = 0; p != NULL && i < p->nstmts; i++)
        PQsendPrepare(c->conn, p->stmts[i].name, p->stmts[i].sql, 0, NULL);
    if (PQpipelineSync(c->conn) != 1)
        rc = oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
    for (size_t i = 0; rc == OC_OK && i < 1 + (p != NULL ? p->nstmts : 0); i++) {
        res = PQgetResult(c->conn);
        if (res == NULL) {
            rc = oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
            break;
        }
        if (PQresultStatus(res) != PGRES_COMMAND_OK && rc == OC_OK) {
            rc = result_error(c->conn, res, err);
            if (rc != OC_E_UNAVAILABLE)
                rc =
                    oc_error_set(err, OC_E_INTERNAL, "database: statement %zu does not prepare", i);
        }
        PQclear(res);
        PQclear(PQgetResult(c->conn)); /* the NULL ending this command's results */
    }
    /* Drain to the sync point whatever happened above. */
    while ((res = PQgetResult(c->conn)) != NULL) {
        ExecStatusType s = PQresultStatus(res);
        PQclear(res);
        if (s == PGRES_PIPELINE_SYNC) break;
    }
    PQexitPipelineMode(c->conn);
    return rc;
}

static oc_err_t connect_slot(oc_pg_conn_t *c, const char *conninfo, oc_error_t *err)
{
    if (c->conn != NULL) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->conn = PQconnectdb(conninfo);
    if (c->conn == NULL) return oc_error_set(err, OC_E_NOMEM, "database: out of memory");
    if (PQstatus(c->conn) != CONNECTION_OK) {
        report(c->conn, NULL, "08000", "connect_failed");
        PQfinish(c->conn);
        c->conn = NULL;
        return oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
    }
    PQsetNoticeReceiver(c->conn, on_notice, c);
    c->broken = false;
    c->fatal = false;
    oc_err_t rc = prepare_all(c, err);
    if (rc != OC_OK) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    return rc;
}

oc_pg_conn_t *oc_pg_connect(const char *conninfo, oc_error_t *err)
{
    oc_pg_conn_t *c = calloc(1, sizeof *c);

    if (c == NULL) {
        oc_error_set(err, OC_E_NOMEM, "database: out of memory");
        return NULL;
    }
    if (connect_slot(c, conninfo, err) != OC_OK) {
        free(c);
        return NULL;
    }
    return c;
}

void oc_pg_disconnect(oc_pg_conn_t *c)
{
    if (c == NULL) return;
    if (c->conn != NULL) PQfinish(c->conn);
    free(c);
}

/*
 * Whether an idle pooled connection can still carry a statement. A server that shut down or
 * restarted while the connection sat in the pool has sent a FATAL (57P01 on a fast shutdown)
 * and closed its end; libpq only notices when it next reads, which used to be the next call,
 * and that call failed. An idle connection has nothing to read, so anything readable is
 * consumed now: EOF or a reset turns the status to CONNECTION_BAD. Costs one poll(2) per
 * acquire. A connection that dies after this check is the retry's business (exec_pooled).
 */
static bool idle_conn_alive(oc_pg_conn_t *c)
{
    struct pollfd pfd = {.fd = PQsocket(c->conn), .events = POLLIN};

    if (PQstatus(c->conn) != CONNECTION_OK || pfd.fd < 0) return false;
    /* The goodbye (FATAL) and the EOF may arrive in separate reads: read until nothing is left
     * (bounded: a live idle session has nothing to say beyond the odd notice). */
    for (int i = 0; i < 4; i++) {
        int r = poll(&pfd, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) break;
        if (r < 0 || PQconsumeInput(c->conn) != 1 || PQstatus(c->conn) != CONNECTION_OK) {
            report(c->conn, NULL, NULL, "connection_lost");
            return false;
        }
    }
    if (c->fatal) {
        if (log_hook != NULL)
            log_hook(c->fatal_state[0] != '\0' ? c->fatal_state : "connection_lost",
                     "connection_lost",
                     c->fatal_msg[0] != '\0' ? c->fatal_msg : "the server ended the session");
        return false;
    }
    return true;
}

oc_pg_conn_t *oc_pg_acquire(oc_pg_pool_t *p, int timeout_ms, oc_error_t *err)
{
    oc_pg_conn_t *c = NULL;
    struct timespec until;
    int64_t waited_from = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Prefer a connected slot so one outage does not make every worker reconnect. */
        for (size_t i = 0; i < p->size && c == NULL; i++)
            if (!p->slots[i].busy && p->slots[i].conn != NULL && !p->slots[i].broken)
                c = &p->slots[i];
        for (size_t i = 0; i < p->size && c == NULL; i++)
            if (!p->slots[i].busy) c = &p->slots[i];
        if (c != NULL) break;
        /* Counted once per acquire, whether it then gets a slot or times out: a pool sized
         * to its workers never waits, so any wait is worth seeing. */
        if (waited_from == 0) {
            waited_from = mono_ns();
            p->waits++;
        }
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0) {
            p->wait_ns += (uint64_t)(mono_ns() - waited_from);
            pthread_mutex_unlock(&p->mu);
            oc_error_set(err, OC_E_UNAVAILABLE, "database: no connection free in time");
            return NULL;
        }
    }
    if (waited_from != 0) p->wait_ns += (uint64_t)(mono_ns() - waited_from);
    c->busy = true;
    p->in_use++;
    unsigned epoch = p->epoch;
    pthread_mutex_unlock(&p->mu);

    /* Connecting happens outside the lock: it blocks for up to connect_timeout. */
    if (c->conn == NULL || c->broken || c->epoch != epoch || !idle_conn_alive(c)) {
        if (connect_slot(c, p->conninfo, err) != OC_OK) {
            oc_pg_release(p, c);
            return NULL;
        }
        c->epoch = epoch;
    }
    return c;
}

void oc_pg_release(oc_pg_pool_t *p, oc_pg_conn_t *c)
{
    if (c == NULL) return;
    pthread_mutex_lock(&p->mu);
    c->busy = false;
    p->in_use--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void clear_results(oc_pg_query_t *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear((PGresult *)q[i].res);
        q[i].res = NULL;
    }
}

/*
 * One attempt: send everything, one sync, read everything.
 *
 * *maybe_committed tells a failed attempt's caller whether the transaction may have committed:
 * the statements form one implicit transaction that commits when the server processes the
 * Sync, so it may have committed only if the Sync went out and no command failed. A
 * connection lost after that, before the Sync's answer, leaves it unknown.
 */
static oc_err_t run_pipeline(oc_pg_conn_t *c, const char *tenant_id, oc_pg_query_t *q, size_t n,
                             bool *maybe_committed, oc_error_t *err)
{
    PGconn *conn = c->conn;
    oc_err_t rc = OC_OK;
    size_t ncmd = n + (tenant_id != NULL ? 1 : 0);
    PGresult *res;

    *maybe_committed = false;
    if (PQenterPipelineMode(conn) != 1) goto lost;
    if (tenant_id != NULL &&
        PQsendQueryPrepared(conn, SET_TENANT_STMT, 1, &tenant_id, NULL, NULL, 0) != 1)
        goto lost;
    for (size_t i = 0; i < n; i++)
        if (PQsendQueryPrepared(conn, q[i].stmt, q[i].nparams, q[i].values, NULL, NULL, 0) != 1)
            goto lost;
    if (PQpipelineSync(conn) != 1) goto lost;
    *maybe_committed = true;

    for (size_t k = 0; k < ncmd; k++) {
        size_t qi = tenant_id != NULL ? k - 1 : k; /* index into q when k is a query */
        bool is_query = tenant_id == NULL || k > 0;

        res = PQgetResult(conn);
        if (res == NULL) goto lost;
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
            if (is_query && rc == OC_OK)
                q[qi].res = (oc_pg_result_t *)res;
            else
                PQclear(res);
            break;
        case PGRES_PIPELINE_ABORTED:
            PQclear(res);
            break;
        default:
            /* A failed command aborts the implicit transaction: nothing commits. */
            *maybe_committed = false;
            if (rc == OC_OK) rc = result_error(conn, res, err);
            PQclear(res);
            break;
        }
        /* Each command's results end with NULL. */
        res = PQgetResult(conn);
        if (res != NULL) {
            PQclear(res);
            goto lost;
        }
    }
    res = PQgetResult(conn);
    if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PQclear(res);
        goto lost;
    }
    PQclear(res);
    PQexitPipelineMode(conn);
    if (rc != OC_OK) clear_results(q, n);
    if (rc == OC_E_UNAVAILABLE) c->broken = true;
    return rc;

lost:
    clear_results(q, n);
    c->broken = true;
    report(conn, NULL, NULL, "connection_lost");
    err->code = OC_OK; /* a lost connection overrides any earlier classification */
    err->msg[0] = '\0';
    return oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
}

/* oc_pg_exec_tx, telling whether a failed transaction may have committed. */
static oc_err_t exec_tx(oc_pg_conn_t *c, const char *tenant_id, oc_pg_query_t *q, size_t n,
                        bool *maybe_committed, oc_error_t *err)
{
    oc_error_t local;
    oc_err_t rc = OC_E_INTERNAL;

    *maybe_committed = false;
    for (size_t i = 0; i < n; i++)
        q[i].res = NULL;
    if (c->conn == NULL || c->broken)
        return oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
    /* Serialization failures and deadlocks are the database asking us to try again. */
    for (int attempt = 0; attempt < MAX_TRIES; attempt++) {
        oc_error_clear(&local);
        rc = run_pipeline(c, tenant_id, q, n, maybe_committed, &local);
        if (rc != OC_E_CONFLICT) break;
    }
    if (rc != OC_OK) oc_error_set(err, rc, "%s", local.msg);
    return rc;
}

oc_err_t oc_pg_exec_tx(oc_pg_conn_t *c, const char *tenant_id, oc_pg_query_t *q, size_t n,
                       oc_error_t *err)
{
    bool maybe_committed;

    return exec_tx(c, tenant_id, q, n, &maybe_committed, err);
}

/* Whether every statement of q is marked OC_PG_IDEMPOTENT in the pool's table. */
static bool all_idempotent(const oc_pg_pool_t *p, const oc_pg_query_t *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < p->nstmts && !found; k++)
            if (strcmp(p->stmts[k].name, q[i].stmt) == 0) {
                if ((p->stmts[k].flags & OC_PG_IDEMPOTENT) == 0) return false;
                found = true;
            }
        if (!found) return false;
    }
    return true;
}

oc_err_t oc_pg_pool_exec_tx(oc_pg_pool_t *p, int timeout_ms, const char *tenant_id,
                            oc_pg_query_t *q, size_t n, oc_error_t *err)
{
    oc_error_t local;
    oc_err_t rc = OC_E_INTERNAL;

    /*
     * At most one retry, on a fresh connection, and only when the connection failed
     * (OC_E_UNAVAILABLE from the transaction itself, not from acquiring): the connection died
     * under a statement, or the server ended it (57P01 on shutdown). Then either
     *   - the transaction certainly did not commit (the Sync never went out, or a command
     *     failed, which aborts the implicit transaction), and running it again is running it
     *     once; or
     *   - the connection was lost during the commit, and nobody can tell whether it committed.
     *     The retry is then allowed only when every statement is marked OC_PG_IDEMPOTENT by
     *     the service: running it twice leaves the rows as running it once, and the second
     *     answer is the one a client retrying with the same key would get.
     * A database that is really down fails the fresh connect quickly (connect_timeout), so
     * the retry costs little when it cannot help.
     */
    for (int attempt = 0; attempt < 2; attempt++) {
        bool maybe_committed = false;
        oc_pg_conn_t *c;

        oc_error_clear(&local);
        c = oc_pg_acquire(p, timeout_ms, &local);
        if (c == NULL) {
            rc = local.code;
            break;
        }
        rc = exec_tx(c, tenant_id, q, n, &maybe_committed, &local);
        if (c->broken) {
            pthread_mutex_lock(&p->mu);
            if (c->epoch == p->epoch) p->epoch++; /* once per generation of connections */
            pthread_mutex_unlock(&p->mu);
        }
        oc_pg_release(p, c);
        if (rc != OC_E_UNAVAILABLE) break;
        if (maybe_committed && !all_idempotent(p, q, n)) break;
    }
    if (rc != OC_OK) oc_error_set(err, rc, "%s", local.msg);
    return rc;
}

oc_err_t oc_pg_exec_simple(oc_pg_conn_t *c, const char *sql, oc_pg_result_t **out, oc_error_t *err)
{
    PGresult *res;
    oc_err_t rc = OC_OK;

    if (out != NULL) *out = NULL;
    res = PQexec(c->conn, sql);
    if (res == NULL) return oc_error_set(err, OC_E_UNAVAILABLE, "database unavailable");
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        /* Admin paths (migrations) show the server's message: operators need it. */
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        rc = oc_error_set(err, classify_sqlstate(state), "%s (SQLSTATE %s)",
                          msg != NULL ? msg : PQerrorMessage(c->conn),
                          state != NULL ? state : "none");
        PQclear(res);
        return rc;
    }
    if (out != NULL)
        *out = (oc_pg_result_t *)res;
    else
        PQclear(res);
    return OC_OK;
}

void oc_pg_result_free(oc_pg_result_t *r)
{
    PQclear((PGresult *)r);
}

int oc_pg_ntuples(const oc_pg_result_t *r)
{
    return r != NULL ? PQntuples((const PGresult *)r) : 0;
}

int oc_pg_nfields(const oc_pg_result_t *r)
{
    return r != NULL ? PQnfields((const PGresult *)r) : 0;
}

const char *oc_pg_value(const oc_pg_result_t *r, int row, int col)
{
    if (r == NULL || col < 0) return "";
    return PQgetvalue((const PGresult *)r, row, col);
}

int oc_pg_length(const oc_pg_result_t *r, int row, int col)
{
    if (r == NULL || col < 0) return 0;
    return PQgetlength((const PGresult *)r, row, col);
}

bool oc_pg_isnull(const oc_pg_result_t *r, int row, int col)
{
    if (r == NULL || col < 0) return true;
    return PQgetisnull((const PGresult *)r, row, col) != 0;
}

int oc_pg_fnumber(const oc_pg_result_t *r, const char *name)
{
    return r != NULL ? PQfnumber((const PGresult *)r, name) : -1;
}

int oc_pg_fnumber_hint(const oc_pg_result_t *r, const char *name, int *hint)
{
    const PGresult *res = (const PGresult *)r;
    int h = *hint;
    const char *f;

    if (res == NULL) return -1;
    /* Our column names are lowercase and unquoted, which PQfnumber matches exactly. */
    if (h >= 0 && h < PQnfields(res) && (f = PQfname(res, h)) != NULL && strcmp(f, name) == 0)
        return h;
    h = PQfnumber(res, name);
    *hint = h;
    return h;
}

const char *oc_pg_cell(const oc_pg_result_t *r, int row, const char *name, int *hint, int *len)
{
    const PGresult *res = (const PGresult *)r;
    int c = oc_pg_fnumber_hint(r, name, hint);

    if (c < 0 || PQgetisnull(res, row, c)) return NULL;
    if (len != NULL) *len = PQgetlength(res, row, c);
    return PQgetvalue(res, row, c);
}
