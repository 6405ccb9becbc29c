/* The engine's clock, for callers outside engine/ (engine/clock.h is the
 * engine's own, inline on the hot path). */
#include "engine/clock.h"
#include "engine/engine.h"

double mr_engine_clock_seconds(void)
{
    return mr_clock_seconds();
}
