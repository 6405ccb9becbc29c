/* "Did you mean ...?" for mistyped keys, sections and enum values. */
#include <string.h>

#include "jobs/jobs.h"

/* Optimal string alignment distance: Levenshtein plus adjacent swaps, the
 * commonest typo ("stpe").  Names are short, so a fixed table suffices and
 * longer names are simply not compared. */
#define MR_SUGGEST_MAX 64

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MR_SUGGEST_MAX || lb >= MR_SUGGEST_MAX)
        return (size_t)-1;
    size_t d[MR_SUGGEST_MAX][MR_SUGGEST_MAX];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *mr_suggest(const char *name, const char *const *candidates, size_t n)
{
    /* A third of the name may be wrong: "step_intervall" -> "step_interval",
     * but "x" does not become "top_k". */
    size_t limit = strlen(name) / 3;
    if (limit < 1)
        limit = 1;
    const char *best = NULL;
    size_t best_distance = limit + 1;
    for (size_t i = 0; i < n; i++) {
        size_t distance = edit_distance(name, candidates[i]);
        if (distance < best_distance) {
            best_distance = distance;
            best = candidates[i];
        }
    }
    return best;
}
