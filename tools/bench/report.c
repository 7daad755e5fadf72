/* The benchmark's output: a table on stdout, results.json and results.md (for docs/). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bench.h"

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static double mb(long kb)
{
    return (double)kb / 1024.0;
}

static double per_call_us(double cpu_s, double calls)
{
    return calls > 0 ? cpu_s * 1e6 / calls : 0;
}

/* Share of all cores used by processes other than the client, service and PostgreSQL. */
static double others_pct(const bench_report_t *r, double cpu_other_s, double seconds)
{
    return seconds > 0 && r->ncpu > 0 ? 100.0 * cpu_other_s / (seconds * r->ncpu) : 0;
}

static const char *verdict(const bench_target_t *t, bool markdown)
{
    if (!t->measured_ok) return "N/A";
    if (t->pass) return "PASS";
    return markdown ? "**MISS**" : "MISS";
}

/* ---- text ---- */

void bench_report_print(const bench_report_t *r, FILE *f)
{
    const bench_ctx_t *ctx = r->ctx;

    fprintf(f, "\nomnichat-bench-persistence: figures (durable commits; client, service and "
               "PostgreSQL share the machine)\n");
    fprintf(f,
            "\nPersistInbound, 1 message per call, vs pgbench (single-row INSERT ... ON "
            "CONFLICT DO NOTHING RETURNING), %d s per phase\n",
            r->duration_s);
    fprintf(f, "  %-9s %7s | %11s %8s %8s %8s %6s | %11s %8s %8s | %8s\n", "kind", "callers",
            "svc calls/s", "p50 ms", "p99 ms", "max ms", "errors", "pgbench tps", "p50 ms",
            "p99 ms", "svc/pgb");
    for (int i = 0; i < r->nwrites; i++) {
        const bench_write_row_t *w = &r->writes[i];
        fprintf(f, "  %-9s %7d | %11.0f %8.2f %8.2f %8.2f %6llu | ", w->kind, w->concurrency,
                w->svc.rate, w->svc.p50_ms, w->svc.p99_ms, w->svc.max_ms,
                (unsigned long long)w->svc.errors);
        if (w->pg.ok)
            fprintf(f, "%11.0f %8.2f %8.2f | %7.0f%%\n", w->pg.tps, w->pg.p50_ms, w->pg.p99_ms,
                    100.0 * ratio(w->svc.rate, w->pg.tps));
        else
            fprintf(f, "%11s %8s %8s | %8s\n", "-", "-", "-", "-");
    }

    fprintf(f,
            "\nCPU per call in microseconds (client: this program, gRPC included; others: "
            "the rest of the machine, %% of all %d cores)\n",
            r->ncpu);
    fprintf(f, "  %-9s %7s | %8s %8s %8s %7s | %8s %8s %7s\n", "kind", "callers", "client",
            "service", "postgres", "others", "pgbench", "postgres", "others");
    for (int i = 0; i < r->nwrites; i++) {
        const bench_write_row_t *w = &r->writes[i];
        double n = (double)w->svc.calls, m = (double)w->pg.xacts;
        fprintf(f, "  %-9s %7d | %8.0f %8.0f %8.0f %6.0f%% | %8.0f %8.0f %6.0f%%\n", w->kind,
                w->concurrency, per_call_us(w->svc.cpu_self_s, n), per_call_us(w->svc.cpu_svc_s, n),
                per_call_us(w->svc.cpu_pg_s, n), others_pct(r, w->svc.cpu_other_s, w->svc.seconds),
                per_call_us(w->pg.cpu_pgbench_s, m), per_call_us(w->pg.cpu_pg_s, m),
                others_pct(r, w->pg.cpu_other_s, w->pg.seconds));
    }

    fprintf(f,
            "\nReads, 1 caller, %d s per phase (reference: the service's own statements "
            "over one libpq connection, same transaction shape)\n",
            r->list_duration_s);
    fprintf(f, "  %-17s %-42s | %7s %7s %7s %7s %6s %7s | %7s %7s\n", "rpc", "page", "p50 ms",
            "p99 ms", "max ms", "calls/s", "errors", "others", "sql p50", "sql p99");
    for (int i = 0; i < r->nreads; i++) {
        const bench_read_row_t *x = &r->reads[i];
        fprintf(f, "  %-17s %-42s | %7.3f %7.3f %7.3f %7.0f %6llu %6.0f%% | %7.3f %7.3f\n", x->rpc,
                x->page, x->svc.p50_ms, x->svc.p99_ms, x->svc.max_ms, x->svc.rate,
                (unsigned long long)x->svc.errors,
                others_pct(r, x->svc.cpu_other_s, x->svc.seconds), x->ref.p50_ms, x->ref.p99_ms);
    }

    fprintf(f,
            "\nMemory of omnichat-persistence (64 workers): %.1f MB before load; peak RSS "
            "(VmHWM) after the 64-caller phases %.1f MB; highest VmRSS sampled during them "
            "%.1f MB\n",
            mb(r->rss_idle_kb), mb(r->rss_hwm_kb), mb(r->rss_max_64_kb));
    if (ctx != NULL)
        fprintf(f,
                "Cursor walks in the big conversation (%lld messages): %d pages of 200 up "
                "from the newest in %.2f s, %d pages of 200 from the oldest in %.2f s\n",
                ctx->big_conv_messages, ctx->walk_pages, ctx->walk_before_s, ctx->walk_pages,
                ctx->walk_after_s);
    fprintf(f, "Load average (1/5/15 min) at the start: %s; at the end: %s\n", r->loadavg_start,
            r->loadavg_end);
    for (int i = 0; i < r->nnotes; i++)
        fprintf(f, "Note: %s\n", r->notes[i]);

    fprintf(f, "\nTargets (from the issue)\n");
    for (int i = 0; i < r->ntargets; i++) {
        const bench_target_t *t = &r->targets[i];
        fprintf(f, "  %-4s  %-58s %-10s measured %s; others %.0f%%\n", verdict(t, false), t->what,
                t->target, t->measured, t->others_pct);
    }
    bench_issue_print(f, "Targets (issue 10)", r->issue, r->nissue);
    fprintf(f, "\n");
}

/* ---- JSON ---- */

static void jstats(FILE *f, const bench_stats_t *s)
{
    fprintf(f,
            "{\"threads\": %d, \"calls\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
            "\"rate\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
            "\"mean_ms\": %.3f, \"rss_max_kb\": %ld, \"cpu_client_s\": %.2f, "
            "\"cpu_service_s\": %.2f, \"cpu_postgres_s\": %.2f, \"cpu_others_s\": %.2f, "
            "\"first_error\": ",
            s->threads, (unsigned long long)s->calls, (unsigned long long)s->errors, s->seconds,
            s->rate, s->p50_ms, s->p99_ms, s->max_ms, s->mean_ms, s->rss_max_kb, s->cpu_self_s,
            s->cpu_svc_s, s->cpu_pg_s, s->cpu_other_s);
    bench_json_str(f, s->first_error);
    fputc('}', f);
}

int bench_report_json(const bench_report_t *r, const char *path)
{
    const bench_ctx_t *ctx = r->ctx;
    char now[32];
    FILE *f = fopen(path, "w");

    if (f == NULL) return -1;
    bench_utc_now(now, sizeof now);
    fprintf(f,
            "{\n  \"generated_at\": \"%s\",\n  \"duration_s\": %d,\n  \"list_duration_s\": %d,\n"
            "  \"ncpu\": %d,\n  \"loadavg_start\": \"%s\",\n  \"loadavg_end\": \"%s\",\n",
            now, r->duration_s, r->list_duration_s, r->ncpu, r->loadavg_start, r->loadavg_end);
    if (ctx != NULL)
        fprintf(f,
                "  \"seed\": {\"big_conversation_messages\": %lld, \"inbox_conversations\": %lld, "
                "\"deep_position\": %ld, \"walk_pages\": %d, \"walk_before_s\": %.3f, "
                "\"walk_after_s\": %.3f},\n",
                ctx->big_conv_messages, ctx->inbox_conversations, ctx->deep_position,
                ctx->walk_pages, ctx->walk_before_s, ctx->walk_after_s);
    fprintf(f, "  \"persist_inbound\": [\n");
    for (int i = 0; i < r->nwrites; i++) {
        const bench_write_row_t *w = &r->writes[i];
        fprintf(f, "    {\"kind\": \"%s\", \"concurrency\": %d, \"service\": ", w->kind,
                w->concurrency);
        jstats(f, &w->svc);
        fprintf(f,
                ", \"pgbench\": {\"ok\": %s, \"clients\": %d, \"tps\": %.1f, \"transactions\": "
                "%ld, \"failed\": %ld, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
                "\"mean_ms\": %.3f, \"seconds\": %.3f, \"cpu_pgbench_s\": %.2f, "
                "\"cpu_postgres_s\": %.2f, \"cpu_others_s\": %.2f, \"error\": ",
                w->pg.ok ? "true" : "false", w->pg.clients, w->pg.tps, w->pg.xacts, w->pg.failed,
                w->pg.p50_ms, w->pg.p99_ms, w->pg.max_ms, w->pg.mean_ms, w->pg.seconds,
                w->pg.cpu_pgbench_s, w->pg.cpu_pg_s, w->pg.cpu_other_s);
        bench_json_str(f, w->pg.error);
        fprintf(f, "}, \"service_over_pgbench\": %.4f}%s\n", ratio(w->svc.rate, w->pg.tps),
                i + 1 < r->nwrites ? "," : "");
    }
    fprintf(f, "  ],\n  \"reads\": [\n");
    for (int i = 0; i < r->nreads; i++) {
        const bench_read_row_t *x = &r->reads[i];
        fprintf(f, "    {\"rpc\": \"%s\", \"key\": \"%s\", \"page\": ", x->rpc, x->key);
        bench_json_str(f, x->page);
        fprintf(f, ", \"service\": ");
        jstats(f, &x->svc);
        fprintf(f, ", \"reference_sql\": ");
        jstats(f, &x->ref);
        fprintf(f, "}%s\n", i + 1 < r->nreads ? "," : "");
    }
    fprintf(f,
            "  ],\n  \"memory\": {\"idle_rss_kb\": %ld, \"peak_rss_hwm_kb\": %ld, "
            "\"max_sampled_rss_64_kb\": %ld},\n",
            r->rss_idle_kb, r->rss_hwm_kb, r->rss_max_64_kb);
    fprintf(f, "  \"notes\": [");
    for (int i = 0; i < r->nnotes; i++) {
        fprintf(f, "%s", i ? ", " : "");
        bench_json_str(f, r->notes[i]);
    }
    fprintf(f, "],\n  \"issue10_targets\": ");
    bench_issue_json(f, r->issue, r->nissue);
    fprintf(f, ",\n  \"targets\": [\n");
    for (int i = 0; i < r->ntargets; i++) {
        const bench_target_t *t = &r->targets[i];
        bench_json_target(f, t->what, t->target, t->measured);
        fprintf(f, ", \"others_pct\": %.1f, \"result\": \"%s\"}%s\n", t->others_pct,
                verdict(t, false), i + 1 < r->ntargets ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- Markdown (the body of docs/benchmarks.md) ---- */

int bench_report_markdown(const bench_report_t *r, const char *path)
{
    const bench_ctx_t *ctx = r->ctx;
    FILE *f = fopen(path, "w");

    if (f == NULL) return -1;
    bench_issue_markdown(
        f, "## Targets (issue 10)",
        "Issue 10's figures that this benchmark measures, each beside its reference from the same "
        "run and the ratio between them, with the value the issue recorded before the work. The "
        "connector's rows are in the LINE connector section below.",
        r->issue, r->nissue);
    fprintf(f,
            "\n## Targets\n\n\"Others\" is the share of the %d cores that other processes on "
            "the machine used during the phases behind the figure: the higher, the less the "
            "figure says about Omnichat.\n\n"
            "| Result | Target | Goal | Measured | Others |\n|---|---|---|---|--:|\n",
            r->ncpu);
    for (int i = 0; i < r->ntargets; i++) {
        const bench_target_t *t = &r->targets[i];
        fprintf(f, "| %s | %s | %s | %s | %.0f%% |\n", verdict(t, true), t->what, t->target,
                t->measured, t->others_pct);
    }

    fprintf(f,
            "\n## PersistInbound against pgbench\n\n"
            "One message per call (a known contact and conversation, a new provider message "
            "id, ~100 bytes of text), blocking calls from N threads for %d s per phase; "
            "\"duplicate\" sends keys persisted earlier again. pgbench runs a plain single-row "
            "`INSERT ... ON CONFLICT (tenant_id, channel_account_id, direction, "
            "idempotency_key) DO NOTHING RETURNING id` into `bench.bench_messages` (shaped like "
            "`omnichat.messages`, same indexes, same 1M rows), `-M prepared`, same number of "
            "clients, over the unix socket; new random keys, or an existing key for "
            "\"duplicate\". A CHECKPOINT precedes each write phase. Latency in ms.\n\n",
            r->duration_s);
    fprintf(f, "| Kind | Callers | Service calls/s | p50 | p99 | max | Errors | pgbench tps | "
               "p50 | p99 | Service / pgbench |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < r->nwrites; i++) {
        const bench_write_row_t *w = &r->writes[i];
        fprintf(f, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %llu | ", w->kind, w->concurrency,
                w->svc.rate, w->svc.p50_ms, w->svc.p99_ms, w->svc.max_ms,
                (unsigned long long)w->svc.errors);
        if (w->pg.ok)
            fprintf(f, "%.0f | %.2f | %.2f | %.0f%% |\n", w->pg.tps, w->pg.p50_ms, w->pg.p99_ms,
                    100.0 * ratio(w->svc.rate, w->pg.tps));
        else
            fprintf(f, "- | - | - | - |\n");
    }

    fprintf(f,
            "\nCPU per call in microseconds, from /proc: the client (this program, gRPC "
            "included), the service, PostgreSQL (postmaster and every backend); \"others\" is "
            "what the rest of the machine used meanwhile, as a share of all %d cores (anything "
            "above a few %% means the figures were taken on a busy machine).\n\n"
            "| Kind | Callers | Client | Service | PostgreSQL | Others | pgbench | PostgreSQL "
            "| Others |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
            r->ncpu);
    for (int i = 0; i < r->nwrites; i++) {
        const bench_write_row_t *w = &r->writes[i];
        double n = (double)w->svc.calls, m = (double)w->pg.xacts;
        fprintf(f, "| %s | %d | %.0f | %.0f | %.0f | %.0f%% | %.0f | %.0f | %.0f%% |\n", w->kind,
                w->concurrency, per_call_us(w->svc.cpu_self_s, n), per_call_us(w->svc.cpu_svc_s, n),
                per_call_us(w->svc.cpu_pg_s, n), others_pct(r, w->svc.cpu_other_s, w->svc.seconds),
                per_call_us(w->pg.cpu_pgbench_s, m), per_call_us(w->pg.cpu_pg_s, m),
                others_pct(r, w->pg.cpu_other_s, w->pg.seconds));
    }

    fprintf(f,
            "\n## Reads\n\n"
            "One caller, %d s per row. ListMessages reads the conversation of %lld messages, "
            "page_size 50; the deep cursors were obtained by walking %d pages of 200 (%.2f s "
            "scrolling up from the newest, %.2f s from the oldest). ListConversations reads "
            "the tenant with %lld conversations, page_size 50. \"SQL\" is the reference: the "
            "service's own prepared statements over one libpq connection as the runtime role, "
            "in the same one-round-trip transaction (set_config + statements), without gRPC "
            "and protobuf. Latency in ms.\n\n",
            r->list_duration_s, ctx ? ctx->big_conv_messages : 0LL, ctx ? ctx->walk_pages : 0,
            ctx ? ctx->walk_before_s : 0, ctx ? ctx->walk_after_s : 0,
            ctx ? ctx->inbox_conversations : 0LL);
    fprintf(f, "| RPC | Page | p50 | p99 | max | calls/s | Errors | Others | SQL p50 | SQL p99 "
               "|\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < r->nreads; i++) {
        const bench_read_row_t *x = &r->reads[i];
        fprintf(f, "| %s | %s | %.3f | %.3f | %.3f | %.0f | %llu | %.0f%% | %.3f | %.3f |\n",
                x->rpc, x->page, x->svc.p50_ms, x->svc.p99_ms, x->svc.max_ms, x->svc.rate,
                (unsigned long long)x->svc.errors,
                others_pct(r, x->svc.cpu_other_s, x->svc.seconds), x->ref.p50_ms, x->ref.p99_ms);
    }
    fprintf(f,
            "\n## Memory\n\nomnichat-persistence with 64 workers (64 database connections): "
            "%.1f MB resident before any load; peak RSS (VmHWM) after the 64-caller phases "
            "%.1f MB; highest VmRSS sampled every 20 ms during them %.1f MB.\n",
            mb(r->rss_idle_kb), mb(r->rss_hwm_kb), mb(r->rss_max_64_kb));
    return bench_md_finish(f, r->loadavg_start, r->loadavg_end, "## Notes", &r->notes[0][0],
                           sizeof r->notes[0], r->nnotes);
}
