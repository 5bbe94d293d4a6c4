/* The short variant of `make chaos` (tests/chaos/chaos.sh): 24 images of test-4k at 64 px
 * (levels l16 and l64, 2 workers each) on a standing coordinator with --state, while a random
 * worker is SIGKILLed and restarted every 2 s, one is SIGSTOPped for 6 s and the coordinator is
 * SIGKILLed and restarted on the same state once; every PNG byte-identical to a clean render,
 * the manifest the same. */
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST_TIMEOUT(farm_chaos_short, 400)
{
    const char *bin = getenv("STRATA_BIN");
    char dir[1200], out[4096] = "", err[8192] = "";
    snprintf(dir, sizeof dir, "%s/chaos", test_tmpdir());
    setenv("CHAOS_KILL_S", "2", 1);
    setenv("CHAOS_LIMIT_S", "330", 1);
    const char *argv[] = {
        "/bin/bash", "tests/chaos/chaos.sh", bin ? bin : "build/strata", dir, "24", "64", "1",
        NULL};
    int rc = test_run_program(argv, err, sizeof err, out, sizeof out);
    fprintf(stderr, "%s", out);
    CHECKF(rc == 0, "chaos.sh exit %d: %s%s", rc, out, err);
    CHECKF(strstr(out, "chaos: ok:") != NULL, "%s", out);
}
