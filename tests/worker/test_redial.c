/* A worker that gets no WELCOME says HELLO again (on a fresh connection, worker/link.c) after
 * 1 s, 2, 4, ... 32 s: the waits double and stop at 32 s. */
#include "tests/test.h"
#include "worker/link.h"

TEST(worker_backoff_doubles_to_32_s)
{
    int want[] = {1000, 2000, 4000, 8000, 16000, 32000, 32000}, ms = 0;
    for (int i = 0; i < 7; i++) {
        ms = worker_backoff_next(ms);
        CHECKF(ms == want[i], "try %d waits %d ms, not %d", i + 1, ms, want[i]);
    }
}
