/* What every benchmark report writer needs: times, load, JSON strings, Markdown cells. */
#include <stdarg.h>
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
