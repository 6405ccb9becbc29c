/*
 * A request line's generations.  A line asks for n choices of each of its
 * prompts (a list of prompts, OpenAI's completions allow); each is a
 * generation of its own in the engine, with its own seed, and the line's
 * result waits for the last.  Choice k is choice k % n of prompt k / n, as
 * OpenAI numbers them.
 *
 * Echo and log-probabilities are spelled here from what the engine hands
 * back: the prompt's and the completion's ids, and 1 + top_logprobs
 * entries per scored token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/runner.h"

void mr_runner_line_free(mr_runner_line *line)
{
    for (uint32_t i = 0; line->done && i < line->n_choices; i++)
        mr_completion_out_free(&line->done[i]);
    free(line->done);
    for (size_t i = 0; line->req.prompts && i < line->req.n_prompts; i++) {
        free((char *)line->req.prompts[i].text);
        free((int32_t *)line->req.prompts[i].ids);
    }
    free(line->req.prompts);
    free((char *)line->req.custom_id);
    free((char *)line->req.model);
    *line = (mr_runner_line){0};
}

int mr_runner_line_start(mr_runner_line *line, uint32_t shard, const mr_request *req)
{
    size_t prompts = req->endpoint == MR_ENDPOINT_CHAT ? 1 : req->n_prompts;
    *line = (mr_runner_line){.used = true,
                             .shard = shard,
                             .n_choices = (uint32_t)(prompts * (size_t)req->n),
                             .req = {.custom_id = strdup(req->custom_id),
                                     .model = req->model ? strdup(req->model) : NULL,
                                     .endpoint = req->endpoint,
                                     .file_index = req->file_index,
                                     .line_no = req->line_no,
                                     .n = req->n,
                                     .logprobs = req->logprobs,
                                     .echo = req->echo,
                                     .top_logprobs = req->top_logprobs}};
    line->n_left = line->n_choices;
    line->done = calloc(line->n_choices, sizeof *line->done);
    bool ok = line->done && line->req.custom_id && (!req->model || line->req.model);
    /* Echo needs each prompt's text: a text prompt's own bytes (the
     * completion's ids would decode to them, but the user's text is what
     * they gave); token-id prompts are decoded when the result is made. */
    if (ok && req->echo && req->endpoint == MR_ENDPOINT_COMPLETIONS) {
        line->req.prompts = calloc(req->n_prompts, sizeof *line->req.prompts);
        line->req.n_prompts = line->req.prompts ? req->n_prompts : 0;
        ok = line->req.prompts != NULL;
        for (size_t i = 0; ok && i < req->n_prompts; i++)
            if (req->prompts[i].text)
                ok = (line->req.prompts[i].text = strdup(req->prompts[i].text)) != NULL;
    }
    if (!ok) {
        mr_runner_line_free(line);
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

bool mr_runner_line_done(mr_runner_line *line, uint32_t choice, mr_completion_out *out)
{
    line->done[choice] = *out;
    *out = (mr_completion_out){0};
    return --line->n_left == 0;
}

/* The text a choice shows: with echo, its prompt's text (as given, or its
 * ids decoded), then the completion. */
static int choice_text(const mr_runner_line *line, uint32_t choice, const mr_tokenizer *tok,
                       mr_buf *text)
{
    const mr_completion_out *c = &line->done[choice];
    size_t prompt = choice / (uint32_t)line->req.n;
    text->len = 0;
    if (line->req.echo) {
        const char *given = line->req.prompts[prompt].text;
        if (given) {
            if (mr_buf_append(text, given, strlen(given)))
                return MR_EXIT_FAILED;
        } else {
            mr_detok detok = {.whole = true}; /* a prompt is a whole text */
            size_t cap = text->cap;
            for (int i = 0; i <= c->prompt_tokens; i++)
                if (mr_detok_push(tok, &detok, i < c->prompt_tokens ? c->tokens[i] : -1,
                                  &text->data, &text->len, &cap) != MR_ENGINE_OK)
                    return MR_EXIT_FAILED;
            text->cap = cap;
        }
    }
    return mr_buf_append(text, c->text, c->text_len) ? MR_EXIT_FAILED : MR_EXIT_OK;
}

/* The scored tokens of a choice and their alternatives, as bytes. */
static int choice_logprobs(const mr_completion_out *c, const mr_tokenizer *tok, bool echo,
                           mr_completion *out, mr_result_token **tokens, mr_result_token **top)
{
    size_t first = echo ? 0 : (size_t)c->prompt_tokens;
    size_t total = (size_t)(c->prompt_tokens + c->completion_tokens), n = total - first;
    size_t per = 1 + (size_t)c->n_top;
    *tokens = calloc(n ? n : 1, sizeof **tokens);
    *top = calloc(n * (size_t)c->n_top + 1, sizeof **top);
    if (!*tokens || !*top)
        return MR_EXIT_FAILED;
    for (size_t i = 0; i < n; i++) {
        size_t at = first + i;
        mr_result_token *t = &(*tokens)[i];
        t->bytes = mr_tokenizer_token_bytes(tok, c->tokens[at], &t->len);
        if (at < (size_t)c->logprobs_from)
            continue; /* echo's first token: nothing before it to score it */
        const mr_token_logprob *lp = c->logprobs + (at - (size_t)c->logprobs_from) * per;
        t->logprob = lp[0].logprob;
        for (int k = 0; k < c->n_top; k++) {
            mr_result_token *alt = &(*top)[i * (size_t)c->n_top + (size_t)k];
            alt->bytes = mr_tokenizer_token_bytes(tok, lp[1 + k].id, &alt->len);
            alt->logprob = lp[1 + k].logprob;
        }
    }
    out->tokens = *tokens;
    out->top = *top;
    out->n_tokens = n;
    out->n_unscored = echo && c->logprobs_from > 0 ? (size_t)c->logprobs_from : 0;
    out->n_top = c->n_top;
    return MR_EXIT_OK;
}

int mr_runner_line_format(const mr_runner_line *line, const mr_tokenizer *tok,
                          const char *job_name, const char *model_name, int64_t created,
                          mr_buf *out, int64_t *prompt_tokens, int64_t *completion_tokens)
{
    uint32_t n = line->n_choices;
    mr_completion *choices = calloc(n, sizeof *choices);
    mr_buf *texts = calloc(n, sizeof *texts);
    mr_result_token **tokens = calloc(n, sizeof *tokens), **top = calloc(n, sizeof *top);
    int rc = choices && texts && tokens && top ? MR_EXIT_OK : MR_EXIT_FAILED;
    *prompt_tokens = *completion_tokens = 0;
    for (uint32_t k = 0; rc == MR_EXIT_OK && k < n; k++) {
        const mr_completion_out *c = &line->done[k];
        bool first_of_prompt = k % (uint32_t)line->req.n == 0;
        rc = choice_text(line, k, tok, &texts[k]);
        choices[k] = (mr_completion){
            .text = texts[k].data ? texts[k].data : "",
            .text_len = texts[k].len,
            .finish_reason = c->finish == MR_FINISH_STOP ? "stop" : "length",
            .prompt_tokens = first_of_prompt ? c->prompt_tokens : 0,
            .completion_tokens = c->completion_tokens};
        if (rc == MR_EXIT_OK && line->req.logprobs)
            rc = choice_logprobs(c, tok, line->req.echo, &choices[k], &tokens[k], &top[k]);
        *prompt_tokens += choices[k].prompt_tokens;
        *completion_tokens += choices[k].completion_tokens;
    }
    if (rc == MR_EXIT_OK && mr_result_format(out, job_name, model_name, &line->req, choices, n,
                                             created) != MR_JOBS_OK)
        rc = MR_EXIT_FAILED;
    for (uint32_t k = 0; k < n; k++) {
        if (texts)
            mr_buf_free(&texts[k]);
        if (tokens)
            free(tokens[k]);
        if (top)
            free(top[k]);
    }
    free(choices);
    free(texts);
    free(tokens);
    free(top);
    if (rc != MR_EXIT_OK)
        fprintf(stderr, "moerun run: out of memory\n");
    return rc;
}
