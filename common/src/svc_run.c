/* The serve() body every Omnichat service shares. */
#include "omnichat/svc_run.h"

#include "omnichat/log.h"
#include "omnichat/svc.h"

int oc_svc_run(const oc_svc_ops_t *ops, void *cfg, const char *version)
{
    oc_error_t err;
    void *svc;
    int ports[2] = {0, 0};

    oc_error_clear(&err);
    svc = ops->create(cfg, &err);
    if (svc == NULL || ops->start(svc, ports, &err) != OC_OK) {
        OC_ERROR("could not start", OC_LS("detail", err.msg));
        ops->stop(svc);
        ops->destroy(svc);
        return 1;
    }
    OC_INFO("listening", OC_LI(ops->port_names[0], ports[0]), OC_LI(ops->port_names[1], ports[1]),
            OC_LS("version", version));
    if (ops->started != NULL) ops->started(svc, cfg);

    /* Outside the log call: its arguments are not evaluated when info is off. */
    const char *sig = oc_svc_wait_for_signal();
    OC_INFO("shutting down", OC_LS("signal", sig));
    ops->stop(svc);
    ops->destroy(svc);
    OC_INFO("stopped");
    return 0;
}
