/* A log call that check-log-args.py must reject: the wait happens only when info is on. */
#include "omnichat/log.h"
#include "omnichat/svc.h"

void serve_until_signal(int *counter);

void serve_until_signal(int *counter)
{
    OC_INFO("shutting down", OC_LS("signal", oc_svc_wait_for_signal()));
    OC_DEBUG("counted", OC_LI("n", ++*counter));
    /* A pure accessor and a string mentioning f() are fine. */
    OC_WARN("f() failed", OC_LS("code", oc_err_name(OC_E_INTERNAL)));
}
