/* Finding a model directory's scheduler settings, as diffusers lays them out. */
#include "worker/worker.h"

#include <stdio.h>
#include <unistd.h>

int worker_model_scheduler(const char *dir, const char *sampler, float eta, sched_config *c,
                           strata_err *e)
{
    static const char *const places[] = {"%s/scheduler_config.json",
                                         "%s/scheduler/scheduler_config.json",
                                         "%s/../scheduler/scheduler_config.json"};
    char path[4096];
    int rc = 0, found = 0;
    for (size_t i = 0; i < sizeof places / sizeof places[0] && !found; i++) {
        snprintf(path, sizeof path, places[i], dir);
        found = access(path, R_OK) == 0;
    }
    if (found)
        rc = sched_config_load(path, c, e);
    else
        sched_config_default(SCHED_DDPM, c);
    if (rc) return rc;
    c->eta = eta;
    if (!sampler || !*sampler) return 0;
    sched_kind kind;
    if (sched_kind_parse(sampler, &kind))
        return err_set(e, ERR_INPUT, "sampler: '%s' is not ddim, ddpm or dpm++2m", sampler);
    c->kind = kind;
    return 0;
}
