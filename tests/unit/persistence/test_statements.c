/* The first tenant wall, statement by statement: every prepared statement of the service that
 * reads or writes a tenant table or view names the tenant itself (tenant_id = $1), once for each
 * table it reaches. Row-level security would hide a statement that lost its filter from every
 * API test; tests/integration/test_tenant_filters.py runs the API with it switched off, and this
 * test checks the statement texts, including those no test happens to reach. Calls of the SQL
 * functions (omnichat.name(...)) are not table references: their bodies are covered there. */
#include "pst.h"

#include <CUnit/Basic.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "test_main.h"

/* sql without its string literals ('omnichat.result_id' names a setting, not a table). */
static void strip_literals(const char *sql, char *out, size_t cap)
{
    bool quoted = false;
    size_t k = 0;

    for (const char *p = sql; *p != '\0' && k + 1 < cap; p++) {
        if (*p == '\'')
            quoted = !quoted;
        else if (!quoted)
            out[k++] = *p;
    }
    out[k] = '\0';
}

/* Table and view references: "omnichat.<identifier>" not followed by "(". */
static int table_refs(const char *sql)
{
    int n = 0;
    for (const char *p = strstr(sql, "omnichat."); p != NULL; p = strstr(p, "omnichat.")) {
        p += strlen("omnichat.");
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        if (*p != '(') n++;
    }
    return n;
}

/* Tenant filters: "tenant_id = $1", or "tenant_id = x.tenant_id", a correlation with a row that
 * was itself filtered (an outbound row's attachments). */
static int tenant_filters(const char *sql)
{
    static const char key[] = "tenant_id = ";
    int n = 0;

    for (const char *p = strstr(sql, key); p != NULL; p = strstr(p + 1, key)) {
        const char *rhs = p + strlen(key);
        size_t len = strcspn(rhs, " \t\n");

        if ((len == 2 && strncmp(rhs, "$1", 2) == 0) ||
            (len > 9 && strncmp(rhs + len - 9, "tenant_id", 9) == 0))
            n++;
    }
    return n;
}

static void check_table(const oc_pg_stmt_t *stmts, size_t n, int *checked)
{
    static char sql[65536];

    for (size_t i = 0; i < n; i++) {
        strip_literals(stmts[i].sql, sql, sizeof sql);
        int refs = table_refs(sql);
        int filters = tenant_filters(sql);

        if (refs == 0) continue;
        (*checked)++;
        if (filters < refs)
            fprintf(stderr, "\n  %s: %d table references, %d tenant filters: %s\n", stmts[i].name,
                    refs, filters, stmts[i].sql);
        CU_ASSERT(filters >= refs);
    }
}

static void test_every_table_statement_filters_by_tenant(void)
{
    int checked = 0;

    check_table(pst_stmts_conversations, pst_nstmts_conversations, &checked);
    check_table(pst_stmts_messages, pst_nstmts_messages, &checked);
    check_table(pst_stmts_channels, pst_nstmts_channels, &checked);
    check_table(pst_stmts_outbound, pst_nstmts_outbound, &checked);
    check_table(pst_stmts_metrics, pst_nstmts_metrics, &checked);
    /* The check saw the statements it exists for (get_conversation, the lists, ...). */
    CU_ASSERT(checked >= 10);
}

static void test_the_check_catches_a_missing_filter(void)
{
    CU_ASSERT_EQUAL(table_refs("SELECT * FROM omnichat.v_conversations WHERE id = $2"), 1);
    CU_ASSERT_EQUAL(tenant_filters("SELECT * FROM omnichat.v_conversations WHERE id = $2"), 0);
    CU_ASSERT_EQUAL(tenant_filters("WHERE tenant_id = $12 AND tenant_id = $2"), 0);
    CU_ASSERT_EQUAL(tenant_filters("WHERE tenant_id = $1 AND a.tenant_id = m.tenant_id"), 2);
    CU_ASSERT_EQUAL(table_refs("SELECT * FROM omnichat.claim_due_outbound($1, $2, $3, $4)"), 0);
    CU_ASSERT_EQUAL(table_refs("UPDATE omnichat.a SET x = 1 WHERE tenant_id = $1 AND EXISTS "
                               "(SELECT 1 FROM omnichat.b c WHERE c.tenant_id = $1)"),
                    2);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("statements", NULL, NULL);
    CU_add_test(s, "every table statement filters by tenant",
                test_every_table_statement_filters_by_tenant);
    CU_add_test(s, "the check catches a missing filter", test_the_check_catches_a_missing_filter);
    failed = oc_test_run();
    return failed;
}
