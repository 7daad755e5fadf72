/* Prometheus metrics: labelled counters, gauges and histograms, rendered as text format 0.0.4. */
#ifndef OMNICHAT_METRICS_H
#define OMNICHAT_METRICS_H

#include <stddef.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"

/* Content-Type of oc_metrics_render's output, for the /metrics handler. */
#define OC_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct oc_metrics oc_metrics_t;
typedef struct oc_metric oc_metric_t; /* one family: name, help, label names */

/* A registry. Everything below is thread-safe, except that destroy must not race with use.
 * create returns NULL on OOM; destroy accepts NULL. */
oc_metrics_t *oc_metrics_create(void);
void oc_metrics_destroy(oc_metrics_t *m);

/*
 * Registers a family (names are copied). label_names may be NULL when nlabels is 0. Returns
 * NULL on OOM, a duplicate name, or an invalid metric or label name (Prometheus syntax; "le"
 * is reserved for histograms). The family lives as long as the registry. A family without
 * labels renders 0 from the start; a labelled one renders only the children used so far.
 */
oc_metric_t *oc_metrics_counter(oc_metrics_t *m, const char *name, const char *help,
                                const char *const *label_names, size_t nlabels);
oc_metric_t *oc_metrics_gauge(oc_metrics_t *m, const char *name, const char *help,
                              const char *const *label_names, size_t nlabels);
/* Buckets are upper bounds in strictly ascending order (+Inf is implicit; a trailing +Inf is
 * accepted and ignored); NULL: default latency buckets in seconds (0.0005 … 10). */
oc_metric_t *oc_metrics_histogram(oc_metrics_t *m, const char *name, const char *help,
                                  const char *const *label_names, size_t nlabels,
                                  const double *buckets, size_t nbuckets);

/*
 * Label values in the family's label order (copied on first use; keep cardinality bounded: past
 * OC_METRICS_MAX_CHILDREN distinct label sets per family, new sets are dropped). A NULL value
 * is "". f may be NULL (no-op), so a failed registration does not crash the hot path.
 * inc: counters (v < 0 ignored) and gauges. set: gauges and counters (a total read from
 * elsewhere). observe: histograms (NaN ignored). A call on the wrong kind does nothing.
 * Cost: a mutex-protected lookup in the family plus the update.
 */
#define OC_METRICS_MAX_CHILDREN 1000
void oc_metric_inc(oc_metric_t *f, const char *const *label_values, double v);
void oc_metric_set(oc_metric_t *f, const char *const *label_values, double v);
void oc_metric_observe(oc_metric_t *f, const char *const *label_values, double v);

/* Called at the start of every render, in registration order, outside the registry's locks
 * (so fn may call oc_metric_set), e.g. to set gauges read from elsewhere. Hooks cannot be
 * removed; arg must outlive the registry. OOM while adding is ignored. */
void oc_metrics_on_render(oc_metrics_t *m, void (*fn)(void *arg), void *arg);
/* The same for a malloc'd arg that the registry then owns: freed by oc_metrics_destroy, or
 * at once when the hook cannot be added (OC_E_NOMEM). */
oc_err_t oc_metrics_on_render_owned(oc_metrics_t *m, void (*fn)(void *arg), void *arg);

/*
 * Registers the process families of the standard Prometheus clients, read from /proc/self at
 * every render: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds; and omnichat_build_info{version,revision} 1, with `version`
 * (NULL or "": "unknown") and the git revision the binary was built from ("unknown" outside a
 * checkout). Once per registry. OC_E_NOMEM (or a duplicate registration) on failure.
 */
oc_err_t oc_metrics_process(oc_metrics_t *m, const char *version);

/* Appends the whole registry in Prometheus text format, families in registration order and
 * children in first-use order. Returns out->failed (OC_E_TOO_LARGE or OC_E_NOMEM) or OC_OK. */
oc_err_t oc_metrics_render(oc_metrics_t *m, oc_buf_t *out);

#endif
