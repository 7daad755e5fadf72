/* The connector benchmark's output: a table on stdout, results.json and results.md (for docs/). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bl.h"

static double mb(long kb)
{
    return kb > 0 ? (double)kb / 1024.0 : 0;
}

static double per_item_us(double cpu_s, uint64_t items)
{
    return items > 0 ? cpu_s * 1e6 / (double)items : 0;
}

/* Share of all cores used by processes outside the benchmark during a phase. */
static double others_pct(const bl_report_t *r, const bl_phase_t *p)
{
    return p->st.seconds > 0 && r->ncpu > 0
               ? 100.0 * p->cpu.other_s / (p->st.seconds * (double)r->ncpu)
               : 0;
}

/* Markdown table cells must not hold a bare '|'. */
/* ---- text ---- */

void bl_report_print(const bl_report_t *r, FILE *f)
{
    fprintf(f,
            "\nomnichat-bench-line: figures (durable commits; client, connector, persistence, "
            "simulator and PostgreSQL share %d cores)\n",
            r->ncpu);
    fprintf(f, "\n  %-6s %-48s %-16s %s\n", "result", "figure", "target", "measured");
    for (int i = 0; i < r->ntargets; i++) {
        const bl_target_t *t = &r->targets[i];
        fprintf(f, "  %-6s %-48s %-16s %s\n",
                !t->measured_ok ? "n/a"
                : t->pass       ? "PASS"
                                : "MISS",
                t->what, t->target, t->measured);
    }
    fprintf(f, "\n  %-52s %10s %9s %8s %8s %8s %7s %9s\n", "phase", "items/s", "calls/s", "p50 ms",
            "p99 ms", "max ms", "errors", "deadlocks");
    for (int i = 0; i < BL_PH__COUNT; i++) {
        const bl_phase_t *p = &r->ph[i];
        if (!p->ran) continue;
        fprintf(f, "  %-52s %10.0f %9.0f %8.2f %8.2f %8.2f %7llu %9lld  %s\n", p->title,
                p->items_rate, p->st.rate, p->st.p50_ms, p->st.p99_ms, p->st.max_ms,
                (unsigned long long)p->st.errors, p->deadlocks, p->unit);
        if (p->st.errors > 0 && p->st.first_error[0])
            fprintf(f, "  %-52s first error: %s\n", "", p->st.first_error);
    }
    bench_issue_print(f, "  Targets (issue 10)", r->issue, r->nissue);
    fprintf(f, "\n  CPU per item, microseconds: %-24s %7s %9s %11s %9s %10s %7s\n", "", "client",
            "connector", "persistence", "simulator", "PostgreSQL", "others");
    for (int i = 0; i < BL_PH__COUNT; i++) {
        const bl_phase_t *p = &r->ph[i];
        if (!p->ran) continue;
        fprintf(f, "  %-52s %7.0f %9.0f %11.0f %9.0f %10.0f %6.0f%%\n", p->title,
                per_item_us(p->cpu.self_s, p->items), per_item_us(p->cpu.conn_s, p->items),
                per_item_us(p->cpu.pst_s, p->items), per_item_us(p->cpu.sim_s, p->items),
                per_item_us(p->cpu.pg_s, p->items), others_pct(r, p));
    }
    if (r->sends.done || r->sends.error[0])
        fprintf(f,
                "\n  SendText exactly once: %s — %llu SENT replies, %llu simulator deliveries, "
                "%llu matched, %llu missing, %llu extra, %llu duplicate ids, %llu duplicate "
                "retry keys; database: %llu sent of %llu rows%s%s\n",
                r->sends.exact ? "yes" : "NO", (unsigned long long)r->sends.replies_sent,
                (unsigned long long)r->sends.deliveries, (unsigned long long)r->sends.matched,
                (unsigned long long)r->sends.missing, (unsigned long long)r->sends.extra,
                (unsigned long long)r->sends.dup_ids, (unsigned long long)r->sends.dup_retry_keys,
                (unsigned long long)r->sends.db_sent, (unsigned long long)r->sends.db_total,
                r->sends.error[0] ? "; error: " : "", r->sends.error);
    const bl_ingest_check_t *ic[2] = {&r->ingest_k1, &r->ingest_k10};
    for (int i = 0; i < 2; i++)
        if (ic[i]->done || ic[i]->error[0])
            fprintf(f,
                    "  Webhook k=%d, accepted events stored exactly once: %s — %llu events in 200 "
                    "POSTs: %llu stored, %llu missing, %llu duplicate rows; %llu events in failed "
                    "POSTs, %llu of them stored anyway; %llu rows, %llu unmatched%s%s\n",
                    i == 0 ? 1 : r->k_big, ic[i]->exact ? "yes" : "NO",
                    (unsigned long long)ic[i]->expected, (unsigned long long)ic[i]->stored_accepted,
                    (unsigned long long)ic[i]->missing, (unsigned long long)ic[i]->duplicates,
                    (unsigned long long)ic[i]->failed_events,
                    (unsigned long long)ic[i]->stored_of_failed, (unsigned long long)ic[i]->rows,
                    (unsigned long long)ic[i]->unparsed, ic[i]->error[0] ? "; error: " : "",
                    ic[i]->error);
    fprintf(f,
            "\n  Peak RSS (VmHWM) after the runs: connector %.1f MB (idle %.1f MB), persistence "
            "%.1f MB (idle %.1f MB), simulator %.1f MB; PostgreSQL client backends: %ld\n",
            mb(r->hwm_conn_kb), mb(r->rss_idle_conn_kb), mb(r->hwm_pst_kb), mb(r->rss_idle_pst_kb),
            mb(r->hwm_sim_kb), r->pg_connections);
    fprintf(f, "  Load average at start: %s; at the end: %s\n", r->loadavg_start, r->loadavg_end);
    for (int i = 0; i < r->nnotes; i++)
        fprintf(f, "  Note: %s\n", r->notes[i]);
    fputc('\n', f);
}

/* ---- JSON ---- */

static void jphase(FILE *f, const bl_report_t *r, const bl_phase_t *p)
{
    fprintf(f, "{\"title\": ");
    bench_json_str(f, p->title);
    fprintf(f,
            ", \"reference\": %s, \"callers\": %d, \"items_per_call\": %d, \"unit\": \"%s\", "
            "\"items\": %llu, \"items_per_s\": %.1f, \"calls\": %llu, \"calls_per_s\": %.1f, "
            "\"errors\": %llu, \"seconds\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
            "\"max_ms\": %.3f, \"mean_ms\": %.3f, \"rss_max_kb\": %ld, \"http_other\": %llu, "
            "\"http_503\": %llu, "
            "\"last_http_status\": %d, \"deadlocks\": %lld, \"cpu_s\": {\"client\": %.3f, "
            "\"connector\": %.3f, "
            "\"persistence\": %.3f, \"simulator\": %.3f, \"postgres\": %.3f, \"others\": %.3f}, "
            "\"others_pct\": %.1f, \"first_error\": ",
            p->reference ? "true" : "false", p->st.threads, p->k, p->unit,
            (unsigned long long)p->items, p->items_rate, (unsigned long long)p->st.calls,
            p->st.rate, (unsigned long long)p->st.errors, p->st.seconds, p->st.p50_ms, p->st.p99_ms,
            p->st.max_ms, p->st.mean_ms, p->st.rss_max_kb, (unsigned long long)p->http_other,
            (unsigned long long)p->http_503, p->last_http_status, p->deadlocks, p->cpu.self_s,
            p->cpu.conn_s, p->cpu.pst_s, p->cpu.sim_s, p->cpu.pg_s, p->cpu.other_s,
            others_pct(r, p));
    bench_json_str(f, p->st.first_error);
    fputc('}', f);
}

int bl_report_json(const bl_report_t *r, const char *path)
{
    char now[32];
    FILE *f = fopen(path, "w");
    bool first = true;

    if (f == NULL) return -1;
    bench_utc_now(now, sizeof now);
    fprintf(f,
            "{\n  \"generated_at\": \"%s\",\n  \"duration_s\": %d,\n  \"ref_duration_s\": %d,\n"
            "  \"callers\": %d,\n  \"ncpu\": %d,\n  \"tenants\": %d,\n  \"channels\": %d,\n"
            "  \"users\": %d,\n  \"loadavg_start\": \"%s\",\n  \"loadavg_end\": \"%s\",\n"
            "  \"services\": ",
            now, r->duration_s, r->ref_duration_s, r->threads, r->ncpu, r->ntenants, r->nch,
            r->nusers, r->loadavg_start, r->loadavg_end);
    bench_json_str(f, r->flags);
    fprintf(f, ",\n  \"targets\": [\n");
    for (int i = 0; i < r->ntargets; i++) {
        const bl_target_t *t = &r->targets[i];
        bench_json_target(f, t->what, t->target, t->measured);
        fprintf(f, ", \"result\": \"%s\"}%s\n",
                !t->measured_ok ? "n/a"
                : t->pass       ? "PASS"
                                : "MISS",
                i + 1 < r->ntargets ? "," : "");
    }
    fprintf(f, "  ],\n  \"issue10_targets\": ");
    bench_issue_json(f, r->issue, r->nissue);
    fprintf(f, ",\n  \"phases\": {\n");
    for (int i = 0; i < BL_PH__COUNT; i++) {
        if (!r->ph[i].ran) continue;
        fprintf(f, "%s    \"%s\": ", first ? "" : ",\n", r->ph[i].key);
        jphase(f, r, &r->ph[i]);
        first = false;
    }
    fprintf(f,
            "\n  },\n  \"sendtext_check\": {\"done\": %s, \"exact\": %s, \"replies_sent\": %llu, "
            "\"deliveries\": %llu, \"matched\": %llu, \"missing\": %llu, \"extra\": %llu, "
            "\"duplicate_ids\": %llu, \"duplicate_retry_keys\": %llu, \"db_sent\": %llu, "
            "\"db_total\": %llu, \"error\": ",
            r->sends.done ? "true" : "false", r->sends.exact ? "true" : "false",
            (unsigned long long)r->sends.replies_sent, (unsigned long long)r->sends.deliveries,
            (unsigned long long)r->sends.matched, (unsigned long long)r->sends.missing,
            (unsigned long long)r->sends.extra, (unsigned long long)r->sends.dup_ids,
            (unsigned long long)r->sends.dup_retry_keys, (unsigned long long)r->sends.db_sent,
            (unsigned long long)r->sends.db_total);
    bench_json_str(f, r->sends.error);
    fprintf(f, "},\n");
    const bl_ingest_check_t *ic[2] = {&r->ingest_k1, &r->ingest_k10};
    for (int i = 0; i < 2; i++) {
        fprintf(f,
                "  \"webhook_k%d_check\": {\"done\": %s, \"exact\": %s, \"expected\": %llu, "
                "\"stored_accepted\": %llu, \"missing\": %llu, \"duplicates\": %llu, "
                "\"failed_events\": %llu, \"stored_of_failed\": %llu, \"rows\": %llu, "
                "\"unmatched\": %llu, \"error\": ",
                i == 0 ? 1 : r->k_big, ic[i]->done ? "true" : "false",
                ic[i]->exact ? "true" : "false", (unsigned long long)ic[i]->expected,
                (unsigned long long)ic[i]->stored_accepted, (unsigned long long)ic[i]->missing,
                (unsigned long long)ic[i]->duplicates, (unsigned long long)ic[i]->failed_events,
                (unsigned long long)ic[i]->stored_of_failed, (unsigned long long)ic[i]->rows,
                (unsigned long long)ic[i]->unparsed);
        bench_json_str(f, ic[i]->error);
        fprintf(f, "},\n");
    }
    fprintf(f,
            "  \"memory_kb\": {\"connector_hwm\": %ld, \"connector_idle\": %ld, "
            "\"persistence_hwm\": %ld, \"persistence_idle\": %ld, \"simulator_hwm\": %ld},\n"
            "  \"pg_client_backends\": %ld,\n  \"notes\": [",
            r->hwm_conn_kb, r->rss_idle_conn_kb, r->hwm_pst_kb, r->rss_idle_pst_kb, r->hwm_sim_kb,
            r->pg_connections);
    for (int i = 0; i < r->nnotes; i++) {
        fputs(i > 0 ? ", " : "", f);
        bench_json_str(f, r->notes[i]);
    }
    fprintf(f, "]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- Markdown (pasted into docs/benchmarks.md by scripts/bench-line.sh) ---- */

int bl_report_markdown(const bl_report_t *r, const char *path)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) return -1;
    bench_issue_markdown(
        f, "### Targets (issue 10)",
        "Issue 10's figures that this benchmark measures, each beside its reference from the same "
        "run and the ratio between them, with the value the issue recorded before the work "
        "(LINE). CPU is per item and per process, from /proc; a webhook POST answered 503 is a "
        "failure (its events were not stored).",
        r->issue, r->nissue);
    fprintf(f, "\n### Targets\n\n| Result | Figure | Target | Measured |\n|---|---|---|---|\n");
    for (int i = 0; i < r->ntargets; i++) {
        const bl_target_t *t = &r->targets[i];
        fprintf(f, "| %s | ", !t->measured_ok ? "n/a" : t->pass ? "PASS" : "**MISS**");
        bench_md_cell(f, t->what);
        fputs(" | ", f);
        bench_md_cell(f, t->target);
        fputs(" | ", f);
        bench_md_cell(f, t->measured);
        fputs(" |\n", f);
    }

    fprintf(
        f,
        "\n### Throughput and latency\n\n%d blocking callers per phase; %d s per main phase. "
        "A reference phase makes the same number of calls as the main phase it stands beside "
        "(the simulator's raw send rate runs %d s). Latency is per call (a SendText, a webhook "
        "POST, a raw send, a CreateOutbound+CompleteOutbound pair, a PersistInbound), in ms, of "
        "successful calls.\n\n",
        r->threads, r->duration_s, r->ref_duration_s);
    fprintf(f, "| Phase | Items/s | Calls/s | p50 | p99 | max | Calls | Errors | Deadlocks |\n"
               "|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < BL_PH__COUNT; i++) {
        const bl_phase_t *p = &r->ph[i];
        if (!p->ran) continue;
        fprintf(f, "| %s%s%s | %.0f %s | %.0f | %.2f | %.2f | %.2f | %llu | %llu | %lld |\n",
                p->reference ? "" : "**", p->title, p->reference ? "" : "**", p->items_rate,
                p->unit, p->st.rate, p->st.p50_ms, p->st.p99_ms, p->st.max_ms,
                (unsigned long long)p->st.calls, (unsigned long long)p->st.errors, p->deadlocks);
    }
    bool any_err = false;
    for (int i = 0; i < BL_PH__COUNT; i++)
        if (r->ph[i].ran && r->ph[i].st.errors > 0) any_err = true;
    if (any_err) {
        fprintf(f, "\nFirst error of each phase that had errors:\n\n");
        for (int i = 0; i < BL_PH__COUNT; i++) {
            const bl_phase_t *p = &r->ph[i];
            if (!p->ran || p->st.errors == 0) continue;
            fprintf(f, "- %s: `", p->title);
            bench_md_cell(f, p->st.first_error);
            fprintf(f, "`\n");
        }
    }

    fprintf(f,
            "\n### CPU per item\n\nMicroseconds of CPU per item (send, event, raw send, pair, "
            "message) from /proc, by process: this program (gRPC and libcurl client), the "
            "connector, persistence, the simulator, PostgreSQL (postmaster and every backend). "
            "\"Others\" is what the rest of the machine used meanwhile, as a share of all %d "
            "cores (more than a few %% means the figures were taken on a busy machine).\n\n",
            r->ncpu);
    fprintf(f, "| Phase | Client | Connector | Persistence | Simulator | PostgreSQL | Total | "
               "Others |\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < BL_PH__COUNT; i++) {
        const bl_phase_t *p = &r->ph[i];
        if (!p->ran) continue;
        double total = p->cpu.self_s + p->cpu.conn_s + p->cpu.pst_s + p->cpu.sim_s + p->cpu.pg_s;
        fprintf(f, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f%% |\n", p->title,
                per_item_us(p->cpu.self_s, p->items), per_item_us(p->cpu.conn_s, p->items),
                per_item_us(p->cpu.pst_s, p->items), per_item_us(p->cpu.sim_s, p->items),
                per_item_us(p->cpu.pg_s, p->items), per_item_us(total, p->items), others_pct(r, p));
    }

    fprintf(f, "\n### Exactly once\n\n");
    if (r->sends.done || r->sends.error[0])
        fprintf(f,
                "- SendText: %s. %llu SENT replies; the simulator executed %llu sends; %llu "
                "provider ids matched one reply each, %llu replies had no delivery, %llu "
                "deliveries had no reply, %llu provider ids and %llu retry keys were executed "
                "twice. Database: %llu of the phase's %llu outbound rows are `sent`.%s%s\n",
                r->sends.exact ? "exact" : "**NOT exact**",
                (unsigned long long)r->sends.replies_sent, (unsigned long long)r->sends.deliveries,
                (unsigned long long)r->sends.matched, (unsigned long long)r->sends.missing,
                (unsigned long long)r->sends.extra, (unsigned long long)r->sends.dup_ids,
                (unsigned long long)r->sends.dup_retry_keys, (unsigned long long)r->sends.db_sent,
                (unsigned long long)r->sends.db_total, r->sends.error[0] ? " Error: " : "",
                r->sends.error);
    const bl_ingest_check_t *ic[2] = {&r->ingest_k1, &r->ingest_k10};
    for (int i = 0; i < 2; i++)
        if (ic[i]->done || ic[i]->error[0])
            fprintf(f,
                    "- Webhook, %d event%s per POST: %s. Of %llu events in POSTs answered 200, "
                    "%llu are stored, %llu missing, %llu stored twice. %llu events were in "
                    "POSTs that failed (the provider would deliver them again); %llu of those were "
                    "stored anyway (committed after the connector gave up). %llu rows carry "
                    "the phase's ids; %llu match no POST.%s%s\n",
                    i == 0 ? 1 : r->k_big, i == 0 ? "" : "s",
                    ic[i]->exact ? "exact" : "**NOT exact**", (unsigned long long)ic[i]->expected,
                    (unsigned long long)ic[i]->stored_accepted, (unsigned long long)ic[i]->missing,
                    (unsigned long long)ic[i]->duplicates, (unsigned long long)ic[i]->failed_events,
                    (unsigned long long)ic[i]->stored_of_failed, (unsigned long long)ic[i]->rows,
                    (unsigned long long)ic[i]->unparsed, ic[i]->error[0] ? " Error: " : "",
                    ic[i]->error);

    fprintf(f,
            "\n### Memory\n\nPeak RSS (VmHWM) after every phase: connector %.1f MB (%.1f MB "
            "before any load), persistence %.1f MB (%.1f MB before any load), simulator %.1f MB "
            "(it keeps a log of every request). PostgreSQL client backends at the end: %ld.\n",
            mb(r->hwm_conn_kb), mb(r->rss_idle_conn_kb), mb(r->hwm_pst_kb), mb(r->rss_idle_pst_kb),
            mb(r->hwm_sim_kb), r->pg_connections);
    return bench_md_finish(f, r->loadavg_start, r->loadavg_end, "### What the references say",
                           &r->notes[0][0], sizeof r->notes[0], r->nnotes);
}
