/* Graph API simulator (Send API, Page and Instagram account look-ups, signed echo and receipt
 * webhooks, /__sim/ control API) as a library, on the simulator core (tools/sim). */
#ifndef OMNICHAT_GRAPH_SIM_H
#define OMNICHAT_GRAPH_SIM_H

#include <stdbool.h>
#include <stddef.h>

#include "omnichat/err.h"
#include "sim.h"

typedef struct gsim gsim_t;

typedef struct gsim_opts {
    const char *listen;      /* "127.0.0.1:0" picks a free port; NULL means that */
    int threads;             /* HTTP handler threads; 0 means 16 */
    size_t max_requests;     /* recorded requests and deliveries kept; 0 means 100000 */
    const char *app_secret;  /* signs webhooks, checks appsecret_proof when given; NULL: none */
    const char *webhook_url; /* where echoes and events go; NULL: nowhere (set by /__sim/config) */
} gsim_opts_t;

/* One Page the simulator accepts a Page access token for, with its linked Instagram account
 * (an account of the simulator core: user_id = Page id, basic_id = Instagram account id). */
typedef struct gsim_page_def {
    const char *token;
    const char *page_id;
    const char *name;  /* NULL: "Page " + last 6 characters of the id */
    const char *ig_id; /* NULL: no Instagram account */
} gsim_page_def_t;

/* Creates the simulator and serves HTTP; NULL with err on failure. */
gsim_t *gsim_create(const gsim_opts_t *opts, oc_error_t *err);
int gsim_port(const gsim_t *s);
/* Stops the server, waiting for running handlers and echo deliveries, and frees everything. */
void gsim_destroy(gsim_t *s);
oc_err_t gsim_add_page(gsim_t *s, const gsim_page_def_t *def, oc_error_t *err);

/* The documented sandbox Page and Instagram account of `omnichat-graph-sim --sandbox`. */
#define GSIM_SANDBOX_PAGE_ID "100000000000001"
#define GSIM_SANDBOX_IG_ID "17841400000000001"
#define GSIM_SANDBOX_NAME "Omnichat Sandbox Page"

#endif
