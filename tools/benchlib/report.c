/* What every benchmark report writer needs: times, load, JSON strings, Markdown cells. */
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

void bench_utc_now(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void bench_loadavg(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;

    if (f != NULL && fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(buf, cap, "%.2f %.2f %.2f", a, b, c);
    else
        snprintf(buf, cap, "unknown");
    if (f != NULL) fclose(f);
}

void bench_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s != NULL && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void bench_json_target(FILE *f, const char *what, const char *target, const char *measured)
{
    fprintf(f, "    {\"what\": ");
    bench_json_str(f, what);
    fprintf(f, ", \"target\": ");
    bench_json_str(f, target);
    fprintf(f, ", \"measured\": ");
    bench_json_str(f, measured);
}

void bench_md_cell(FILE *f, const char *s)
{
    for (; s != NULL && *s; s++) {
        if (*s == '|')
            fputs("\\|", f);
        else if (*s == '\n')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

void bench_progress(const char *fmt, ...)
{
    char ts[16];
    time_t t = time(NULL);
    struct tm tm;
    va_list ap;

    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    fprintf(stderr, "[%s] ", ts);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int bench_md_finish(FILE *f, const char *loadavg_start, const char *loadavg_end,
                    const char *heading, const char *notes, size_t note_len, int nnotes)
{
    fprintf(f,
            "\nLoad average (1/5/15 min) when the benchmark program started: %s; when it "
            "ended: %s.\n",
            loadavg_start, loadavg_end);
    if (nnotes > 0) {
        fprintf(f, "\n%s\n\n", heading);
        for (int i = 0; i < nnotes; i++)
            fprintf(f, "- %s\n", notes + (size_t)i * note_len);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- an issue's target table ---- */

bench_issue_row_t *bench_issue_row(bench_issue_row_t *rows, int *n, int cap, const char *figure,
                                   const char *goal, const char *before, bool measured_ok,
                                   bool pass, const char *fmt, ...)
{
    bench_issue_row_t *r;
    va_list ap;

    if (*n >= cap) return NULL;
    r = &rows[(*n)++];
    memset(r, 0, sizeof *r);
    snprintf(r->figure, sizeof r->figure, "%s", figure);
    snprintf(r->goal, sizeof r->goal, "%s", goal);
    snprintf(r->before, sizeof r->before, "%s", before);
    r->measured_ok = measured_ok;
    r->pass = measured_ok && pass;
    r->others_pct = -1;
    if (!measured_ok) {
        snprintf(r->measured, sizeof r->measured, "not measured");
        return r;
    }
    va_start(ap, fmt);
    vsnprintf(r->measured, sizeof r->measured, fmt, ap);
    va_end(ap);
    return r;
}

const char *bench_issue_verdict(const bench_issue_row_t *r, bool markdown)
{
    if (!r->measured_ok) return "n/a";
    if (r->pass) return "PASS";
    return markdown ? "**MISS**" : "MISS";
}

void bench_issue_print(FILE *f, const char *title, const bench_issue_row_t *rows, int n)
{
    char others[16];

    fprintf(f, "\n%s\n  %-4s  %-62s %-24s %-34s %-12s %-14s %-24s %s\n", title, "", "figure",
            "measured", "reference (same run)", "ratio", "goal", "before (issue)", "others");
    for (int i = 0; i < n; i++) {
        const bench_issue_row_t *r = &rows[i];
        if (r->others_pct >= 0)
            snprintf(others, sizeof others, "%.0f%%", r->others_pct);
        else
            snprintf(others, sizeof others, "-");
        fprintf(f, "  %-4s  %-62s %-24s %-34s %-12s %-14s %-24s %s\n",
                bench_issue_verdict(r, false), r->figure, r->measured,
                r->reference[0] ? r->reference : "-", r->ratio[0] ? r->ratio : "-", r->goal,
                r->before, others);
    }
}

void bench_issue_markdown(FILE *f, const char *heading, const char *intro,
                          const bench_issue_row_t *rows, int n)
{
    fprintf(f, "%s\n\n%s\n\n", heading, intro);
    fprintf(f, "| Result | Figure | Measured | Reference (same run) | Ratio | Goal | Before "
               "(issue) | Others |\n|---|---|--:|--:|--:|---|--:|--:|\n");
    for (int i = 0; i < n; i++) {
        const bench_issue_row_t *r = &rows[i];
        const char *cells[6] = {r->figure,
                                r->measured,
                                r->reference[0] ? r->reference : "–",
                                r->ratio[0] ? r->ratio : "–",
                                r->goal,
                                r->before};
        fprintf(f, "| %s |", bench_issue_verdict(r, true));
        for (int c = 0; c < 6; c++) {
            fputc(' ', f);
            bench_md_cell(f, cells[c]);
            fputs(" |", f);
        }
        if (r->others_pct >= 0)
            fprintf(f, " %.0f%% |\n", r->others_pct);
        else
            fputs(" – |\n", f);
    }
}

void bench_issue_json(FILE *f, const bench_issue_row_t *rows, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        const bench_issue_row_t *r = &rows[i];
        fprintf(f, "%s\n    {\"figure\": ", i > 0 ? "," : "");
        bench_json_str(f, r->figure);
        fprintf(f, ", \"measured\": ");
        bench_json_str(f, r->measured);
        fprintf(f, ", \"reference\": ");
        bench_json_str(f, r->reference);
        fprintf(f, ", \"ratio\": ");
        bench_json_str(f, r->ratio);
        fprintf(f, ", \"goal\": ");
        bench_json_str(f, r->goal);
        fprintf(f, ", \"before\": ");
        bench_json_str(f, r->before);
        fprintf(f, ", \"others_pct\": %.1f, \"result\": \"%s\"}", r->others_pct,
                bench_issue_verdict(r, false));
    }
    fprintf(f, "%s]", n > 0 ? "\n  " : "");
}
