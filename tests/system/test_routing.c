/*
 * The tiny model routes like a trained MoE: expert popularity is skewed,
 * and text on different topics heats different experts.  EPLB tests and
 * benchmarks rely on both.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

TestSuite(routing, .timeout = 240);

static const char *const cooking[] = {
    "Whisk the eggs with sugar, fold in the flour and bake the sponge cake for thirty minutes.",
    "Simmer the tomato sauce with garlic, onion and basil, then season with salt and pepper.",
    "Knead the bread dough, let it rise until doubled, and bake it in a hot oven.",
    "Roast the chicken with lemon, thyme and butter until the skin is golden and crisp.",
    "Chop the carrots and celery, saute them in olive oil, and add the stock and lentils.",
    "Marinate the beef overnight, then grill it and slice it thinly against the grain.",
};

static const char *const code[] = {
    "The function returns a pointer to the struct; free it after the loop or the memory leaks.",
    "Compile the program with warnings enabled and run the unit tests before you commit.",
    "Declare the variable as an integer, parse the string, and handle the error code.",
    "The compiler inlines the static function and the debugger shows the stack trace.",
    "Refactor the class so the method takes an array and returns the index of the key.",
    "Write a recursive function in Python that walks the tree and prints every node.",
};

/* Routed tokens per (layer, expert) after prefilling `prompts`. */
static uint64_t *route(const char *const *prompts, size_t n, int *layers, int *experts)
{
    char err[1024];
    mr_model *model = mr_test_load_tiny_model(2);
    mr_engine *engine;
    mr_engine_options eo = {.max_batch_tokens = 1024, .max_sequences = 16, .kv_block_size = 16,
                            .kv_blocks = 256};
    cr_assert_eq(mr_engine_create(model, &eo, &engine, err, sizeof err), MR_ENGINE_OK, "%s", err);
    for (size_t i = 0; i < n; i++) {
        mr_generation g = {.handle = i, .text = prompts[i], .text_len = strlen(prompts[i]),
                           .sampling = {.max_tokens = 1, .top_p = 1}};
        cr_assert_eq(mr_engine_submit(engine, &g, err, sizeof err), MR_ENGINE_OK, "%s", err);
    }
    mr_completion_out done[16];
    size_t n_done;
    while (mr_engine_in_flight(engine) > 0) {
        cr_assert_eq(mr_engine_step(engine, done, 16, &n_done, err, sizeof err), MR_ENGINE_OK,
                     "%s", err);
        for (size_t i = 0; i < n_done; i++)
            mr_completion_out_free(&done[i]);
    }
    const mr_model_config *c = mr_model_config_get(model);
    *layers = c->num_hidden_layers;
    *experts = c->num_experts;
    size_t cells = (size_t)*layers * *experts;
    uint64_t *counts = malloc(cells * sizeof *counts);
    memcpy(counts, mr_engine_expert_counts(engine), cells * sizeof *counts);
    mr_engine_free(engine);
    mr_model_free(model);
    return counts;
}

static int by_count_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The hottest `n` experts of a layer, as a bit set. */
static uint64_t hottest(const uint64_t *counts, int experts, int n)
{
    uint64_t set = 0;
    for (int k = 0; k < n; k++) {
        int best = -1;
        for (int e = 0; e < experts; e++)
            if (!(set >> e & 1) && (best < 0 || counts[e] > counts[best]))
                best = e;
        set |= 1ull << best;
    }
    return set;
}

Test(routing, popularity_is_skewed_and_depends_on_the_topic)
{
    int layers, experts;
    uint64_t *cook = route(cooking, 6, &layers, &experts);
    uint64_t *prog = route(code, 6, &layers, &experts);
    cr_assert(experts <= 64);
    int top = experts / 20 > 0 ? experts / 20 : 1, differing_layers = 0;
    for (int l = 0; l < layers; l++) {
        uint64_t sorted[64], total = 0, head = 0, tail = 0;
        for (int e = 0; e < experts; e++) {
            sorted[e] = cook[l * experts + e] + prog[l * experts + e];
            total += sorted[e];
        }
        qsort(sorted, (size_t)experts, sizeof sorted[0], by_count_desc);
        for (int e = 0; e < top; e++)
            head += sorted[e];
        for (int e = experts / 2; e < experts; e++)
            tail += sorted[e];
        double head_share = (double)head / total, tail_share = (double)tail / total;
        /* Uniform routing would give 5% and 50%. */
        cr_assert(head_share > 0.20, "layer %d: the top %d experts take only %.2f", l, top,
                  head_share);
        cr_assert(tail_share < 0.25, "layer %d: the bottom half takes %.2f", l, tail_share);
        uint64_t a = hottest(cook + l * experts, experts, 8), b = hottest(prog + l * experts, experts, 8);
        differing_layers += __builtin_popcountll(a & b) <= 5;
    }
    cr_assert(differing_layers >= layers / 2,
              "cooking and code text heat the same experts in %d of %d layers",
              layers - differing_layers, layers);
    free(cook);
    free(prog);
}
