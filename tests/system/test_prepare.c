/*
 * The engine takes a prompt as text or chat turns: mr_engine_prepare gives
 * the ids the tokenizer gives for the text (for a chat, the text the
 * template renders) and a verdict on its length, which is not an error.
 * test_serve shows the verdicts become the same error records as ever.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "tests/common/fixture.h"

TestSuite(prepare, .timeout = 120);

static mr_model *model;
static mr_engine *engine;

static void setup(void)
{
    char err[512];
    model = mr_test_load_tiny_model(1);
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

/* A tokenizer that asks for a BOS token (add_bos_token, as Llama 2,
 * Mistral and DeepSeek-V3 do): a text prompt starts with it, as vLLM
 * encodes a completion's prompt; a chat's template writes its own. */
Test(prepare, a_text_prompt_starts_with_the_bos_token_the_tokenizer_asks_for)
{
    char *dir = mr_test_tmpdir(), err[512];
    const char *tiny = mr_test_tiny_model();
    static const char *const linked[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        char *from = NULL, *to = NULL;
        cr_assert(asprintf(&from, "%s/%s", tiny, linked[i]) > 0);
        cr_assert(asprintf(&to, "%s/%s", dir, linked[i]) > 0);
        cr_assert_eq(symlink(from, to), 0);
        free(from);
        free(to);
    }
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/tokenizer_config.json", tiny) > 0);
    char *text = mr_test_read(path, NULL);
    cJSON *config = cJSON_Parse(text);
    cr_assert(config);
    cJSON_ReplaceItemInObject(config, "add_bos_token", cJSON_CreateTrue());
    cJSON_ReplaceItemInObject(config, "bos_token", cJSON_CreateString("<|endoftext|>"));
    char *json = cJSON_Print(config);
    free(mr_test_write(dir, "tokenizer_config.json", json, (size_t)-1));

    mr_model_options mo = {.backend = "cpu", .threads = 1};
    mr_model *m = NULL;
    cr_assert_eq(mr_model_load(dir, &mo, &m, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_engine_options eo = {.max_batch_tokens = 64, .max_sequences = 2, .kv_block_size = 16,
                            .kv_blocks = 4};
    mr_engine *e = NULL;
    cr_assert_eq(mr_engine_create(m, &eo, &e, err, sizeof err), MR_ENGINE_OK, "%s", err);
    const mr_tokenizer *tok = mr_model_tokenizer(m);
    int32_t bos = mr_tokenizer_bos(tok);
    cr_assert_eq(bos, mr_tokenizer_find(tok, "<|endoftext|>"));
    cr_assert_geq(bos, 0);

    static const char prompt[] = "Simmer the stock";
    mr_generation g = {.text = prompt, .text_len = sizeof prompt - 1,
                       .sampling = {.max_tokens = 4}};
    mr_prompt_verdict verdict;
    cr_assert_eq(mr_engine_prepare(e, &g, &verdict, err, sizeof err), MR_ENGINE_OK, "%s", err);
    mr_tokens want = {0};
    cr_assert_eq(mr_tokenizer_encode(tok, prompt, sizeof prompt - 1, &want, err, sizeof err),
                 MR_ENGINE_OK);
    cr_assert_eq(g.n_prompt, want.count + 1);
    cr_assert_eq(g.prompt[0], bos);
    cr_assert(memcmp(g.prompt + 1, want.ids, want.count * sizeof *want.ids) == 0);
    mr_tokens_free(&want);

    mr_chat_turn turns[] = {{"user", "Hi"}};
    mr_generation chat = {.turns = turns, .n_turns = 1, .sampling = {.max_tokens = 4}};
    cr_assert_eq(mr_engine_prepare(e, &chat, &verdict, err, sizeof err), MR_ENGINE_OK, "%s",
                 err);
    cr_assert_neq(chat.prompt[0], bos, "a chat gets no BOS the template did not write");

    mr_engine_free(e);
    mr_model_free(m);
    free(json);
    cJSON_Delete(config);
    free(text);
    free(path);
    mr_test_rmtree(dir);
    free(dir);
}
