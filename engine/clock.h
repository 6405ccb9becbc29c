/* Private to engine/: the one clock the engine times itself with. */
#ifndef MR_ENGINE_CLOCK_H
#define MR_ENGINE_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock: for intervals, never for dates. */
static inline double mr_clock_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
