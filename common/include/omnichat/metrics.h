/* Prometheus metrics: labelled counters, gauges and histograms, rendered as text format 0.0.4. */
#ifndef OMNICHAT_METRICS_H
#define OMNICHAT_METRICS_H

#include <stddef.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"

typedef struct oc_metrics oc_metrics_t;
typedef struct oc_metric oc_metric_t; /* one family: name, help, label names */

/* A registry. Everything below is thread-safe. */
oc_metrics_t *oc_metrics_create(void);
void oc_metrics_destroy(oc_metrics_t *m);

/*
 * Registers a family (names are copied). label_names may be NULL when nlabels is 0. Returns
 * NULL on OOM or a duplicate name. The family lives as long as the registry.
 */
oc_metric_t *oc_metrics_counter(oc_metrics_t *m, const char *name, const char *help,
                                const char *const *label_names, size_t nlabels);
oc_metric_t *oc_metrics_gauge(oc_metrics_t *m, const char *name, const char *help,
                              const char *const *label_names, size_t nlabels);
/* Buckets are upper bounds in ascending order (+Inf is implicit); NULL: default latency
 * buckets in seconds (0.0005 … 10). */
oc_metric_t *oc_metrics_histogram(oc_metrics_t *m, const char *name, const char *help,
                                  const char *const *label_names, size_t nlabels,
                                  const double *buckets, size_t nbuckets);

/* Label values in the family's label order (copied on first use; keep cardinality bounded). */
void oc_metric_inc(oc_metric_t *f, const char *const *label_values, double v);
void oc_metric_set(oc_metric_t *f, const char *const *label_values, double v);
void oc_metric_observe(oc_metric_t *f, const char *const *label_values, double v);

/* Called at the start of every render, e.g. to set gauges read from elsewhere. */
void oc_metrics_on_render(oc_metrics_t *m, void (*fn)(void *arg), void *arg);

/* Appends the whole registry in Prometheus text format. */
oc_err_t oc_metrics_render(oc_metrics_t *m, oc_buf_t *out);

#endif
