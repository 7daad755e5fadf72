/* Prometheus registry: labelled counters, gauges and histograms; text format 0.0.4. */
#include "omnichat/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM } kind_t;

/* One label set of a family. Label values are kept raw for lookup and pre-rendered as
 * `a="x",b="y"` so rendering does no escaping under the family lock. */
typedef struct child {
    struct child *next;
    uint64_t hash;
    char **values;
    char *labels; /* escaped pairs without braces; "" when the family has no labels */
    double value; /* counter / gauge */
    double sum;   /* histogram */
    uint64_t count;
    uint64_t buckets[]; /* histogram: per-bucket (not cumulative) counts, nbuckets + 1 */
} child_t;

struct oc_metric {
    struct oc_metric *next;
    kind_t kind;
    char *name;
    char *help;
    char **label_names;
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    /* One lock per family: the hot path of one metric never waits on another's. */
    pthread_mutex_t mu;
    child_t *children, *children_tail;
    size_t nchildren;
};

typedef struct hook {
    struct hook *next;
    void (*fn)(void *arg);
    void *arg;
    bool owned; /* arg is freed with the registry */
} hook_t;

struct oc_metrics {
    /* Guards the two lists. They only grow, and each node's next is written before the
     * count that covers it, so a reader that snapshots (head, count) under the lock may walk
     * that many nodes without it. */
    pthread_mutex_t mu;
    oc_metric_t *families, *families_tail;
    size_t nfamilies;
    hook_t *hooks, *hooks_tail;
    size_t nhooks;
};

static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon_ok && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

/* Shortest text that reads back as the same double, as Prometheus clients print: "1", "0.1",
 * "2.5e-05", "+Inf". */
static void fmt_double(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static oc_err_t append_escaped(oc_buf_t *b, const char *s, bool quote)
{
    /* HELP escapes \ and newline; label values also escape the double quote. */
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (quote && *p == '"')
            esc = "\\\"";
        if (!esc) continue;
        oc_buf_append(b, run, (size_t)(p - run));
        oc_buf_appends(b, esc);
        run = p + 1;
    }
    return oc_buf_appends(b, run);
}

/* A missing array or value is "", so a careless caller gets a label set, not a crash. */
static const char *label_value(const char *const *values, size_t i)
{
    return values && values[i] ? values[i] : "";
}

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)label_value(values, i); *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* separator: ("ab","") != ("a","b") */
    }
    return h;
}

/* ---- children ---- */

static void child_free(child_t *c, size_t nlabels)
{
    if (!c) return;
    if (c->values)
        for (size_t i = 0; i < nlabels; i++)
            free(c->values[i]);
    free(c->values);
    free(c->labels);
    free(c);
}

static child_t *child_new(const oc_metric_t *f, const char *const *values, uint64_t hash)
{
    size_t nb = f->kind == K_HISTOGRAM ? f->nbounds + 1 : 0;
    child_t *c = calloc(1, sizeof *c + nb * sizeof c->buckets[0]);
    if (!c) return NULL;
    c->hash = hash;
    oc_buf_t lb;
    oc_buf_init(&lb, 64 * 1024);
    if (f->nlabels) {
        c->values = calloc(f->nlabels, sizeof *c->values);
        if (!c->values) goto fail;
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        const char *v = label_value(values, i);
        if (!(c->values[i] = xstrdup(v))) goto fail;
        oc_buf_appendf(&lb, "%s%s=\"", i ? "," : "", f->label_names[i]);
        append_escaped(&lb, v, true);
        oc_buf_appends(&lb, "\"");
    }
    if (lb.failed != OC_OK) goto fail;
    size_t len = 0;
    c->labels = oc_buf_detach(&lb, &len); /* NULL when empty, i.e. no labels */
    if (!c->labels) c->labels = xstrdup("");
    if (!c->labels) goto fail;
    return c;
fail:
    oc_buf_dispose(&lb);
    child_free(c, f->nlabels);
    return NULL;
}

/* Finds or creates the child for values. Caller holds f->mu. NULL on OOM or over the cap. */
static child_t *child_get(oc_metric_t *f, const char *const *values)
{
    uint64_t h = hash_values(values, f->nlabels);
    for (child_t *c = f->children; c; c = c->next) {
        if (c->hash != h) continue;
        size_t i = 0;
        while (i < f->nlabels && strcmp(c->values[i], label_value(values, i)) == 0)
            i++;
        if (i == f->nlabels) return c;
    }
    /* Labels can come from requests (an account id in a URL); the cap keeps a flood of
     * distinct values from growing the registry without bound. */
    if (f->nchildren >= OC_METRICS_MAX_CHILDREN) return NULL;
    child_t *c = child_new(f, values, h);
    if (!c) return NULL;
    if (f->children_tail)
        f->children_tail->next = c;
    else
        f->children = c;
    f->children_tail = c;
    f->nchildren++;
    return c;
}

/* ---- families ---- */

static void family_free(oc_metric_t *f)
{
    if (!f) return;
    for (child_t *c = f->children, *n; c; c = n) {
        n = c->next;
        child_free(c, f->nlabels);
    }
    if (f->label_names)
        for (size_t i = 0; i < f->nlabels; i++)
            free(f->label_names[i]);
    free(f->label_names);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static oc_metric_t *family_register(oc_metrics_t *m, kind_t kind, const char *name,
                                    const char *help, const char *const *label_names,
                                    size_t nlabels, const double *buckets, size_t nbuckets)
{
    oc_metric_t *f = NULL;
    if (!m || !valid_name(name, true) || (nlabels && !label_names)) return NULL;
    for (size_t i = 0; i < nlabels; i++) {
        const char *ln = label_names[i];
        /* "__" is reserved for Prometheus itself; "le" would clash with bucket bounds. */
        if (!valid_name(ln, false) || strncmp(ln, "__", 2) == 0) return NULL;
        if (kind == K_HISTOGRAM && strcmp(ln, "le") == 0) return NULL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ln, label_names[j]) == 0) return NULL;
    }
    if (kind == K_HISTOGRAM) {
        if (!buckets) {
            buckets = default_buckets;
            nbuckets = sizeof default_buckets / sizeof default_buckets[0];
        }
        if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0) nbuckets--;
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) return NULL;
    } else {
        nbuckets = 0;
    }

    f = calloc(1, sizeof *f);
    if (!f) return NULL;
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        return NULL;
    }
    f->kind = kind;
    f->nlabels = nlabels;
    f->nbounds = nbuckets;
    if (!(f->name = xstrdup(name)) || !(f->help = xstrdup(help ? help : ""))) goto fail;
    if (nlabels) {
        if (!(f->label_names = calloc(nlabels, sizeof *f->label_names))) goto fail;
        for (size_t i = 0; i < nlabels; i++)
            if (!(f->label_names[i] = xstrdup(label_names[i]))) goto fail;
    }
    if (nbuckets) {
        if (!(f->bounds = malloc(nbuckets * sizeof *f->bounds))) goto fail;
        memcpy(f->bounds, buckets, nbuckets * sizeof *f->bounds);
    }
    /* An unlabelled family has exactly one child; create it now so it renders as 0 before
     * its first event, which is what dashboards and rate() expect. */
    if (nlabels == 0 && !child_get(f, NULL)) goto fail;

    pthread_mutex_lock(&m->mu);
    for (oc_metric_t *g = m->families; g; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            pthread_mutex_unlock(&m->mu);
            goto fail;
        }
    }
    if (m->families_tail)
        m->families_tail->next = f;
    else
        m->families = f;
    m->families_tail = f;
    m->nfamilies++;
    pthread_mutex_unlock(&m->mu);
    return f;
fail:
    family_free(f);
    return NULL;
}

oc_metric_t *oc_metrics_counter(oc_metrics_t *m, const char *name, const char *help,
                                const char *const *label_names, size_t nlabels)
{
    return family_register(m, K_COUNTER, name, help, label_names, nlabels, NULL, 0);
}

oc_metric_t *oc_metrics_gauge(oc_metrics_t *m, const char *name, const char *help,
                              const char *const *label_names, size_t nlabels)
{
    return family_register(m, K_GAUGE, name, help, label_names, nlabels, NULL, 0);
}

oc_metric_t *oc_metrics_histogram(oc_metrics_t *m, const char *name, const char *help,
                                  const char *const *label_names, size_t nlabels,
                                  const double *buckets, size_t nbuckets)
{
    return family_register(m, K_HISTOGRAM, name, help, label_names, nlabels, buckets, nbuckets);
}

/* ---- hot path ---- */

void oc_metric_inc(oc_metric_t *f, const char *const *label_values, double v)
{
    if (!f || f->kind == K_HISTOGRAM || isnan(v)) return;
    if (f->kind == K_COUNTER && v < 0) return; /* counters only go up */
    pthread_mutex_lock(&f->mu);
    child_t *c = child_get(f, label_values);
    if (c) c->value += v;
    pthread_mutex_unlock(&f->mu);
}

void oc_metric_set(oc_metric_t *f, const char *const *label_values, double v)
{
    if (!f || f->kind == K_HISTOGRAM) return;
    pthread_mutex_lock(&f->mu);
    child_t *c = child_get(f, label_values);
    if (c) c->value = v;
    pthread_mutex_unlock(&f->mu);
}

void oc_metric_observe(oc_metric_t *f, const char *const *label_values, double v)
{
    if (!f || f->kind != K_HISTOGRAM || isnan(v)) return;
    /* Binary search outside the lock: bounds never change after registration. */
    size_t lo = 0, hi = f->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    pthread_mutex_lock(&f->mu);
    child_t *c = child_get(f, label_values);
    if (c) {
        c->buckets[lo]++;
        c->sum += v;
        c->count++;
    }
    pthread_mutex_unlock(&f->mu);
}

/* ---- registry ---- */

oc_metrics_t *oc_metrics_create(void)
{
    oc_metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void oc_metrics_destroy(oc_metrics_t *m)
{
    if (!m) return;
    for (oc_metric_t *f = m->families, *n; f; f = n) {
        n = f->next;
        family_free(f);
    }
    for (hook_t *h = m->hooks, *n; h; h = n) {
        n = h->next;
        if (h->owned) free(h->arg);
        free(h);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static bool add_hook(oc_metrics_t *m, void (*fn)(void *arg), void *arg, bool owned)
{
    if (!m || !fn) return false;
    hook_t *h = calloc(1, sizeof *h);
    if (!h) return false;
    h->fn = fn;
    h->arg = arg;
    h->owned = owned;
    pthread_mutex_lock(&m->mu);
    if (m->hooks_tail)
        m->hooks_tail->next = h;
    else
        m->hooks = h;
    m->hooks_tail = h;
    m->nhooks++;
    pthread_mutex_unlock(&m->mu);
    return true;
}

void oc_metrics_on_render(oc_metrics_t *m, void (*fn)(void *arg), void *arg)
{
    add_hook(m, fn, arg, false);
}

oc_err_t oc_metrics_on_render_owned(oc_metrics_t *m, void (*fn)(void *arg), void *arg)
{
    if (add_hook(m, fn, arg, true)) return OC_OK;
    free(arg);
    return OC_E_NOMEM;
}

/* `name_suffix{labels[,extra]} ` — the common prefix of every sample line. */
static void sample_start(oc_buf_t *out, const oc_metric_t *f, const char *suffix, const child_t *c,
                         const char *extra)
{
    oc_buf_appends(out, f->name);
    oc_buf_appends(out, suffix);
    bool has = c->labels[0] != '\0';
    if (has || extra) {
        oc_buf_appends(out, "{");
        oc_buf_appends(out, c->labels);
        if (extra) {
            if (has) oc_buf_appends(out, ",");
            oc_buf_appends(out, extra);
        }
        oc_buf_appends(out, "}");
    }
    oc_buf_appends(out, " ");
}

static void render_family(oc_buf_t *out, oc_metric_t *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    char num[32];
    oc_buf_appendf(out, "# HELP %s ", f->name);
    append_escaped(out, f->help, false);
    oc_buf_appendf(out, "\n# TYPE %s %s\n", f->name, type_names[f->kind]);

    pthread_mutex_lock(&f->mu);
    for (const child_t *c = f->children; c; c = c->next) {
        if (f->kind != K_HISTOGRAM) {
            sample_start(out, f, "", c, NULL);
            fmt_double(c->value, num);
            oc_buf_appendf(out, "%s\n", num);
            continue;
        }
        uint64_t cum = 0;
        char le[48];
        for (size_t i = 0; i <= f->nbounds; i++) {
            cum += c->buckets[i];
            if (i < f->nbounds)
                fmt_double(f->bounds[i], num);
            else
                strcpy(num, "+Inf");
            snprintf(le, sizeof le, "le=\"%s\"", num);
            sample_start(out, f, "_bucket", c, le);
            oc_buf_appendf(out, "%llu\n", (unsigned long long)cum);
        }
        sample_start(out, f, "_sum", c, NULL);
        fmt_double(c->sum, num);
        oc_buf_appendf(out, "%s\n", num);
        sample_start(out, f, "_count", c, NULL);
        oc_buf_appendf(out, "%llu\n", (unsigned long long)c->count);
    }
    pthread_mutex_unlock(&f->mu);
}

oc_err_t oc_metrics_render(oc_metrics_t *m, oc_buf_t *out)
{
    if (!m || !out) return OC_E_INVALID;
    pthread_mutex_lock(&m->mu);
    hook_t *hooks = m->hooks;
    size_t nhooks = m->nhooks;
    pthread_mutex_unlock(&m->mu);
    /* Hooks run unlocked: they set gauges, which takes family locks. */
    /* Never read the next pointer of the last snapshotted node: an append may be writing it. */
    for (size_t i = 0; i < nhooks; i++) {
        hooks->fn(hooks->arg);
        if (i + 1 < nhooks) hooks = hooks->next;
    }

    pthread_mutex_lock(&m->mu);
    oc_metric_t *f = m->families;
    size_t nf = m->nfamilies;
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < nf; i++) {
        render_family(out, f);
        if (i + 1 < nf) f = f->next;
    }
    return out->failed;
}
