/*
 * Sampling the next token from logits.  Private to engine/.
 *
 * Each sequence owns its random stream, seeded from the request, and
 * draws exactly one number per token, so what a request samples depends on
 * its seed and its logits only: not on its batch, its rank or a resume.
 */
#ifndef MR_ENGINE_SAMPLER_H
#define MR_ENGINE_SAMPLER_H

#include "engine/engine.h"

typedef struct {
    uint64_t state;
} mr_rng;

void mr_rng_seed(mr_rng *rng, uint64_t seed);
/* Uniform in [0, 1), 53 random bits. */
double mr_rng_uniform(mr_rng *rng);

typedef struct {
    float prob;
    int32_t id;
} mr_candidate;

/* The next token.  Greedy when temperature is 0 or top_k is 1 (ties go to
 * the lower id); else top-k, then temperature softmax, then top-p, then one
 * draw.  scratch holds `vocab` candidates. */
int32_t mr_sample(const float *logits, int vocab, const mr_sampling_params *params,
                  mr_rng *rng, mr_candidate *scratch);

/* Presence and frequency penalties, as the OpenAI API defines them: every
 * token the completion has produced c > 0 times loses
 * presence_penalty + c * frequency_penalty from its logit.  `logits` is
 * the caller's copy; `sorted` has room for n_completion ids. */
void mr_penalize(float *logits, const int32_t *completion, int n_completion,
                 const mr_sampling_params *params, int32_t *sorted);

/* out[0]: `id` and its log-probability under softmax(logits); out[1..n_top]:
 * the n_top most likely tokens, most likely first, ties to the lower id.
 * The sums run in index order in double precision, so the bits depend on
 * the logits alone, which no batch, rank count or resume changes. */
void mr_logprobs(const float *logits, int vocab, int32_t id, int n_top, mr_token_logprob *out);

#endif
