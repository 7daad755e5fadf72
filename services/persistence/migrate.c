/* Applies the embedded SQL migrations: advisory lock, schema_migrations with checksums. */
#include "migrate.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/log.h"
#include "omnichat/pg.h"
#include "omnichat/util.h"

/* Any constant works; it only has to be the same for every migrating process. */
#define MIGRATE_LOCK_KEY "7310955103846113"

static void sha256_hex(const char *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = sizeof md;

    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    oc_hex_encode(md, 32, out);
}

static oc_err_t apply_one(oc_pg_conn_t *c, const pst_migration_t *m, const char *sum,
                          oc_error_t *err)
{
    char insert[512];

    if (oc_pg_exec_simple(c, "BEGIN", NULL, err) != OC_OK) return err->code;
    if (oc_pg_exec_simple(c, m->sql, NULL, err) != OC_OK) goto fail;
    /* The name comes from our own file names (checked by the build), the sum is hex. */
    snprintf(insert, sizeof insert,
             "INSERT INTO omnichat.schema_migrations (version, name, checksum) "
             "VALUES (%d, '%s', '%s')",
             m->version, m->name, sum);
    if (oc_pg_exec_simple(c, insert, NULL, err) != OC_OK) goto fail;
    return oc_pg_exec_simple(c, "COMMIT", NULL, err);
fail:
    oc_pg_exec_simple(c, "ROLLBACK", NULL, NULL);
    return err->code;
}

oc_err_t pst_migrate(const char *conninfo, int *applied, oc_error_t *err)
{
    oc_pg_conn_t *c = NULL;
    oc_pg_result_t *res = NULL;
    oc_err_t rc;
    char sum[65];

    *applied = 0;
    c = oc_pg_connect(conninfo, err);
    if (c == NULL) return err->code;
    /* The conninfo carries the service's statement_timeout: waiting for another migrator's
     * lock, or a long migration, must not be cut short by it. */
    rc = oc_pg_exec_simple(c, "SET statement_timeout = 0", NULL, err);
    if (rc != OC_OK) goto out;
    rc = oc_pg_exec_simple(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", NULL, err);
    if (rc != OC_OK) goto out;
    rc = oc_pg_exec_simple(c,
                           "SET client_min_messages = warning;"
                           "CREATE SCHEMA IF NOT EXISTS omnichat;"
                           "CREATE TABLE IF NOT EXISTS omnichat.schema_migrations ("
                           " version integer PRIMARY KEY, name text NOT NULL,"
                           " checksum text NOT NULL, applied_at timestamptz NOT NULL"
                           " DEFAULT now())",
                           NULL, err);
    if (rc != OC_OK) goto out;
    rc = oc_pg_exec_simple(c,
                           "SELECT version, name, checksum FROM omnichat.schema_migrations "
                           "ORDER BY version",
                           &res, err);
    if (rc != OC_OK) goto out;

    /* Verify history before touching anything: an edited or unknown migration stops us. */
    for (int i = 0; i < oc_pg_ntuples(res); i++) {
        int version = atoi(oc_pg_value(res, i, 0));
        const pst_migration_t *m = NULL;

        for (size_t k = 0; k < pst_nmigrations; k++)
            if (pst_migrations[k].version == version) m = &pst_migrations[k];
        if (m == NULL) {
            rc = oc_error_set(err, OC_E_FAILED_PRECONDITION,
                              "database has migration %d (%s) that this binary does not know; "
                              "refusing to run an older binary over a newer schema",
                              version, oc_pg_value(res, i, 1));
            goto out;
        }
        sha256_hex(m->sql, m->len, sum);
        if (strcmp(sum, oc_pg_value(res, i, 2)) != 0) {
            rc = oc_error_set(err, OC_E_FAILED_PRECONDITION,
                              "migration %s was edited after it was applied (checksum "
                              "mismatch); add a new migration instead",
                              m->name);
            goto out;
        }
    }
    for (size_t k = 0; k < pst_nmigrations; k++) {
        const pst_migration_t *m = &pst_migrations[k];
        bool done = false;

        for (int i = 0; i < oc_pg_ntuples(res) && !done; i++)
            done = atoi(oc_pg_value(res, i, 0)) == m->version;
        if (done) continue;
        sha256_hex(m->sql, m->len, sum);
        OC_INFO("applying migration", OC_LS("migration", m->name));
        rc = apply_one(c, m, sum, err);
        if (rc != OC_OK) goto out;
        (*applied)++;
    }
    rc = OC_OK;
out:
    oc_pg_result_free(res);
    oc_pg_disconnect(c); /* also releases the advisory lock */
    return rc;
}
