/* Fuzz target job: a job spec's YAML text as the coordinator gets it in a SUBMIT (and as
 * `strata render --job` reads its file: job_load gives the text to the same parser). Promises
 * checked: an error has a message and leaves nothing owned; a job parsed has a count in range,
 * a seeds list only of that count, and no difference from itself (job_spec_diff). */
#include "cluster/config.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>

int fuzz_job_one(const uint8_t *data, size_t size)
{
    job_spec j;
    strata_err e = {0};
    int rc = job_spec_from_yaml_text((const char *)data, size, "SUBMIT", &j, &e);
    if (rc != 0) {
        if (e.msg[0] == 0) fuzz_fail("job", "an error without a message");
        if (j.seeds) fuzz_fail("job", "a failed parse owns a seeds list");
        return 0;
    }
    if (j.count < 1 || j.count > CONFIG_MAX_COUNT) fuzz_fail("job", "count out of range");
    /* the seeds list, when given, is read for every image: touch each entry */
    uint64_t mix = 0;
    for (int i = 0; j.seeds && i < j.count; i++)
        mix ^= j.seeds[i];
    (void)mix;
    char diff[256];
    if (job_spec_diff(&j, &j, diff, sizeof diff)[0] != 0) fuzz_fail("job", "differs from itself");
    if (!memchr(j.pipeline, 0, sizeof j.pipeline) || !memchr(j.name, 0, sizeof j.name))
        fuzz_fail("job", "a string field is not terminated");
    job_spec_free(&j);
    return 0;
}

FUZZ_TARGET(fuzz_job_one)
