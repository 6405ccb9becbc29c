/*
 * A run state with every field set to a value of its own, for the
 * checkpoint tests and benchmark: a field the format forgot would come back
 * as zero and differ.
 */
#ifndef MR_TEST_CHECKPOINT_SAMPLE_H
#define MR_TEST_CHECKPOINT_SAMPLE_H

#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"

static const char CHECKPOINT_SAMPLE_JOB[] =
    "[job]\nname = sample\nrun_dir = /runs/sample\n\n[engine]\nmax_batch_tokens = 256\n"
    "threads = 0\n\n[generation]\nstop = [\"\\n\\n\"]\n";
static const char CHECKPOINT_SAMPLE_CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"num_experts\": 128, \"num_experts_per_tok\": 8, "
    "\"hidden_size\": 2048}";

static inline int checkpoint_sample(mr_checkpoint_state *s, size_t shards, int layers,
                                    int experts, int slots, int ranks, char *err,
                                    size_t errlen)
{
    int rc = mr_checkpoint_state_init(s, shards, err, errlen);
    if (rc != MR_CHECKPOINT_OK)
        return rc;
    s->created = 1712345678;
    s->fingerprint.job = strdup(CHECKPOINT_SAMPLE_JOB);
    s->fingerprint.model_config = strdup(CHECKPOINT_SAMPLE_CONFIG);
    for (size_t i = 0; i < shards; i++) {
        mr_checkpoint_shard *sh = &s->shards[i];
        *sh = (mr_checkpoint_shard){.index = (uint32_t)i,
                                    .next_line = 1 + 1000 * i + i % 7,
                                    .results_offset = (uint64_t)i * 123456789u,
                                    .errors_offset = (uint64_t)i * 977u,
                                    .done = i % 3 == 0};
        /* Lines in flight, one with no token yet, on the shards not done. */
        size_t n = sh->done ? 0 : i % 4;
        sh->in_flight = n ? calloc(n, sizeof *sh->in_flight) : NULL;
        sh->n_in_flight = sh->in_flight ? n : 0;
        for (size_t k = 0; k < sh->n_in_flight; k++) {
            mr_checkpoint_in_flight *f = &sh->in_flight[k];
            /* the third is a second generation of the line before it (n > 1) */
            f->line = sh->next_line - 1 - 3 * (n - k) - (k == 2 ? 3 : 0);
            f->choice = k == 2 ? 3 : 0;
            f->n_tokens = k == 0 ? 0 : 5 * k + i % 3;
            f->tokens = f->n_tokens ? malloc(f->n_tokens * sizeof *f->tokens) : NULL;
            for (size_t t = 0; f->tokens && t < f->n_tokens; t++)
                f->tokens[t] = (int32_t)((t * 7919 + i * 31 + k) % 151936);
            if (f->n_tokens && !f->tokens)
                rc = MR_CHECKPOINT_ENOMEM;
        }
    }
    size_t cells = (size_t)layers * (size_t)slots, loads = (size_t)layers * (size_t)experts;
    int32_t *phy2log = malloc((cells ? cells : 1) * sizeof *phy2log);
    uint64_t *sum = malloc((loads ? loads : 1) * sizeof *sum);
    for (size_t i = 0; phy2log && i < cells; i++)
        phy2log[i] = (int32_t)((i * 7 + i / (size_t)slots) % (size_t)experts);
    for (size_t i = 0; sum && i < loads; i++)
        sum[i] = (uint64_t)i * 2654435761u % 100000000u + (i % 5 == 0 ? 1ULL << 40 : 0);
    if (!phy2log || !sum)
        rc = MR_CHECKPOINT_ENOMEM;
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_set_placement(s, layers, experts, slots, ranks, phy2log, err, errlen);
    if (rc == MR_CHECKPOINT_OK)
        rc = mr_checkpoint_set_window(s, layers, experts, 200, sum, err, errlen);
    free(phy2log);
    free(sum);
    s->counters = (mr_checkpoint_counters){.requests_ok = 1000001,
                                           .requests_failed = 17,
                                           .tokens_in = 123456789012ULL,
                                           .tokens_out = 98765432101ULL,
                                           .wall_seconds = 3600.25,
                                           .rank_seconds = 14400.125,
                                           .preemptions = 3,
                                           .preemption_lost_seconds = 187.5,
                                           .attempts = 4};
    if (rc != MR_CHECKPOINT_OK)
        mr_checkpoint_state_free(s);
    return rc;
}

#endif
