/*
 * The engine takes a prompt as text or chat turns: mr_engine_prepare gives
 * the ids the tokenizer gives for the text (for a chat, the text the
 * template renders) and a verdict on its length, which is not an error.
 * test_serve shows the verdicts become the same error records as ever.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

TestSuite(prepare, .timeout = 120);

static mr_model *model;
static mr_engine *engine;

static void setup(void)
{
    char err[512];
    mr_model_options mo = {.backend = "cpu", .threads = 1};
    cr_assert_eq(mr_model_load(mr_test_tiny_model(), &mo, &model, err, sizeof err), MR_ENGINE_OK,
                 "%s", err);
    /* 4 blocks of 16: at most 64 tokens a sequence. */
    mr_engine_options eo = {.max_batch_tokens = 64, .max_sequences = 2, .kv_block_size = 16,
                            .kv_blocks = 4};
    cr_assert_eq(mr_engine_create(model, &eo, &engine, err, sizeof err), MR_ENGINE_OK, "%s", err);
}

static void teardown(void)
{
    mr_engine_free(engine);
    mr_model_free(model);
}

/* The ids the tokenizer gives `text` match the prepared ones. */
static void assert_ids_of(const char *text, const mr_generation *g)
{
    char err[256];
    mr_tokens want = {0};
    cr_assert_eq(mr_tokenizer_encode(mr_model_tokenizer(model), text, strlen(text), &want, err,
                                     sizeof err),
                 MR_ENGINE_OK, "%s", err);
    cr_assert_eq(g->n_prompt, want.count);
    cr_assert(memcmp(g->prompt, want.ids, want.count * sizeof *want.ids) == 0);
    mr_tokens_free(&want);
}

Test(prepare, text_and_chat_turns_become_the_tokenizers_ids, .init = setup, .fini = teardown)
{
    char err[256];
    mr_prompt_verdict verdict;
    static const char text[] = "Simmer the stock with thyme, then";
    mr_generation g = {.text = text, .text_len = sizeof text - 1, .sampling = {.max_tokens = 4}};
    cr_assert_eq(mr_engine_prepare(engine, &g, &verdict, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert_eq(verdict, MR_PROMPT_OK, "%s", err);
    assert_ids_of(text, &g);

    mr_chat_turn turns[] = {{"system", "Be brief."}, {"user", "Hi"}};
    mr_generation chat = {.turns = turns, .n_turns = 2, .sampling = {.max_tokens = 4}};
    cr_assert_eq(mr_engine_prepare(engine, &chat, &verdict, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert_eq(verdict, MR_PROMPT_OK, "%s", err);
    assert_ids_of("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n",
                  &chat);
}

/* The request's chat_template_kwargs reach the template over its own
 * variables; kwargs that are not an object refuse the chat. */
Test(prepare, chat_template_kwargs_reach_the_template, .init = setup, .fini = teardown)
{
    char err[256];
    mr_prompt_verdict verdict;
    mr_chat_turn turns[] = {{"user", "Hi"}};
    mr_generation chat = {.turns = turns, .n_turns = 1, .sampling = {.max_tokens = 4},
                          .chat_template_kwargs = "{\"add_generation_prompt\": false}"};
    cr_assert_eq(mr_engine_prepare(engine, &chat, &verdict, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert_eq(verdict, MR_PROMPT_OK, "%s", err);
    assert_ids_of("<|im_start|>user\nHi<|im_end|>\n", &chat);

    mr_generation bad = {.turns = turns, .n_turns = 1, .sampling = {.max_tokens = 4},
                         .chat_template_kwargs = "[1]"};
    cr_assert_eq(mr_engine_prepare(engine, &bad, &verdict, err, sizeof err), MR_ENGINE_OK);
    cr_assert_eq(verdict, MR_PROMPT_CHAT_UNSUPPORTED);
    cr_assert_str_eq(err, "chat_template_kwargs is not a JSON object");
}

Test(prepare, a_prompt_that_cannot_fit_is_a_verdict_not_a_failure, .init = setup,
     .fini = teardown)
{
    char err[256];
    mr_prompt_verdict verdict;
    mr_generation empty = {.text = "", .sampling = {.max_tokens = 4}};
    cr_assert_eq(mr_engine_prepare(engine, &empty, &verdict, err, sizeof err), MR_ENGINE_OK);
    cr_assert_eq(verdict, MR_PROMPT_TOO_LONG);
    cr_assert_str_eq(err, "the prompt is empty");
    cr_assert_eq(mr_engine_submit(engine, &empty, err, sizeof err), MR_ENGINE_EINVAL);

    static const char text[] = "Knead the bread dough";
    mr_generation g = {.text = text, .text_len = sizeof text - 1, .sampling = {.max_tokens = 100}};
    cr_assert_eq(mr_engine_prepare(engine, &g, &verdict, err, sizeof err), MR_ENGINE_OK);
    cr_assert_eq(verdict, MR_PROMPT_NO_ROOM);
    cr_assert(strstr(err, "max_tokens 100") && strstr(err, "at most 64 per sequence"), "%s", err);
    /* Submitted anyway, it runs until the sequence is full. */
    mr_generation again = {.text = text, .text_len = sizeof text - 1,
                           .sampling = {.max_tokens = 100, .ignore_eos = true}};
    cr_assert_eq(mr_engine_submit(engine, &again, err, sizeof err), MR_ENGINE_OK, "%s", err);
}
