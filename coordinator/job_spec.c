/* The job spec's life cycle: what a job_spec owns (the explicit seeds list). */
#include "coordinator/coordinator.h"

#include <stdlib.h>

/* Free what j owns and leave j without it; job_spec_free(NULL) is fine. */
void job_spec_free(job_spec *j)
{
    if (!j) return;
    free(j->seeds);
    j->seeds = NULL;
}
