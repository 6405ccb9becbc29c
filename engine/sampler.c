/*
 * Sampling.  Candidates are ordered by logit, ties to the lower id, so that
 * equal logits never make the outcome depend on a sort's whims.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"

/* SplitMix64: tiny, fast, and its whole state is one word, which the
 * checkpoint can store per sequence. */
static uint64_t next_u64(mr_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void mr_rng_seed(mr_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

double mr_rng_uniform(mr_rng *rng)
{
    return (double)(next_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
}

static int32_t argmax(const float *logits, int vocab)
{
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

static int by_logit_desc(const void *a, const void *b)
{
    const mr_candidate *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob > y->prob ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t mr_sample(const float *logits, int vocab, const mr_sampling_params *params,
                  mr_rng *rng, mr_candidate *scratch)
{
    double u = mr_rng_uniform(rng);
    if (params->temperature <= 0 || params->top_k == 1)
        return argmax(logits, vocab);
    int n = vocab;
    for (int i = 0; i < vocab; i++)
        scratch[i] = (mr_candidate){logits[i], i};
    bool sorted = params->top_k > 0 || params->top_p < 1.0;
    if (sorted) {
        qsort(scratch, (size_t)vocab, sizeof *scratch, by_logit_desc);
        if (params->top_k > 0 && params->top_k < n)
            n = params->top_k;
    }
    float max = scratch[0].prob;
    for (int i = 1; i < n; i++)
        if (scratch[i].prob > max)
            max = scratch[i].prob;
    double total = 0;
    for (int i = 0; i < n; i++) {
        double p = exp(((double)scratch[i].prob - max) / params->temperature);
        scratch[i].prob = (float)p;
        total += p;
    }
    if (sorted && params->top_p < 1.0) {
        /* Keep the smallest head of the sorted list whose mass reaches top_p. */
        double kept = 0, want = params->top_p * total;
        int keep = 0;
        while (keep < n && (keep == 0 || kept < want))
            kept += scratch[keep++].prob;
        n = keep;
        total = kept;
    }
    double target = u * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += scratch[i].prob;
        if (acc > target)
            return scratch[i].id;
    }
    return scratch[n - 1].id;
}

static int by_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

void mr_penalize(float *logits, const int32_t *completion, int n_completion,
                 const mr_sampling_params *params, int32_t *sorted)
{
    if (n_completion == 0 || (params->presence_penalty == 0 && params->frequency_penalty == 0))
        return;
    memcpy(sorted, completion, (size_t)n_completion * sizeof *sorted);
    qsort(sorted, (size_t)n_completion, sizeof *sorted, by_id);
    for (int i = 0; i < n_completion;) {
        int j = i;
        while (j < n_completion && sorted[j] == sorted[i])
            j++;
        logits[sorted[i]] -= (float)(params->presence_penalty +
                                     (double)(j - i) * params->frequency_penalty);
        i = j;
    }
}

void mr_logprobs(const float *logits, int vocab, int32_t id, int n_top, mr_token_logprob *out)
{
    float max = logits[0];
    for (int i = 1; i < vocab; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - max);
    double lse = (double)max + log(sum);
    out[0] = (mr_token_logprob){id, (float)((double)logits[id] - lse)};
    /* The head kept sorted by insertion: n_top is at most 20. */
    mr_token_logprob *top = out + 1;
    int kept = 0;
    for (int i = 0; i < vocab && n_top > 0; i++) {
        if (kept == n_top && !(logits[i] > top[kept - 1].logprob))
            continue;
        int at = kept < n_top ? kept++ : n_top - 1;
        while (at > 0 && logits[i] > top[at - 1].logprob) {
            top[at] = top[at - 1];
            at--;
        }
        top[at] = (mr_token_logprob){i, logits[i]};
    }
    for (int k = 0; k < kept; k++)
        top[k].logprob = (float)((double)top[k].logprob - lse);
}
