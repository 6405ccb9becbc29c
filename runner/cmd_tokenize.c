/*
 * moerun tokenize: the model's tokenizer on the command line, one JSON value
 * per line both ways, so it can be diffed against Hugging Face's or fed to
 * other tools (llama.cpp users know this as llama-tokenize).
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "runner/runner.h"

typedef struct {
    const mr_tokenizer *tok;
    mr_tokens ids;
    char *text;
    size_t len, cap;
} tokenize_state;

static int encode_line(tokenize_state *s, const cJSON *value, char *err, size_t errlen)
{
    if (!cJSON_IsString(value)) {
        snprintf(err, errlen, "not a JSON string");
        return MR_ENGINE_EINVAL;
    }
    s->ids.count = 0;
    int rc = mr_tokenizer_encode(s->tok, value->valuestring, strlen(value->valuestring),
                                 &s->ids, err, errlen);
    if (rc != MR_ENGINE_OK)
        return rc;
    putchar('[');
    for (size_t i = 0; i < s->ids.count; i++)
        printf(i ? ", %d" : "%d", s->ids.ids[i]);
    puts("]");
    return MR_ENGINE_OK;
}

static int decode_line(tokenize_state *s, const cJSON *value, char *err, size_t errlen)
{
    if (!cJSON_IsArray(value)) {
        snprintf(err, errlen, "not a JSON array of token ids");
        return MR_ENGINE_EINVAL;
    }
    mr_detok state = {.whole = true}; /* decode as Hugging Face's decode does */
    s->len = 0;
    const cJSON *id;
    int vocab = mr_tokenizer_vocab_size(s->tok);
    cJSON_ArrayForEach(id, value)
    {
        size_t n;
        if (!cJSON_IsNumber(id) || id->valuedouble != (double)(int32_t)id->valuedouble ||
            !mr_tokenizer_token_bytes(s->tok, (int32_t)id->valuedouble, &n)) {
            char *shown = cJSON_PrintUnformatted(id);
            snprintf(err, errlen, "%s is not a token id (0 to %d)", shown ? shown : "?",
                     vocab - 1);
            free(shown);
            return MR_ENGINE_EINVAL;
        }
        if (mr_detok_push(s->tok, &state, (int32_t)id->valuedouble, &s->text, &s->len,
                          &s->cap) != MR_ENGINE_OK)
            return MR_ENGINE_ENOMEM;
    }
    if (mr_detok_push(s->tok, &state, -1, &s->text, &s->len, &s->cap) != MR_ENGINE_OK)
        return MR_ENGINE_ENOMEM;
    cJSON *str = cJSON_CreateString(s->len ? s->text : "");
    char *json = str ? cJSON_PrintUnformatted(str) : NULL;
    cJSON_Delete(str);
    if (!json)
        return MR_ENGINE_ENOMEM;
    puts(json);
    free(json);
    return MR_ENGINE_OK;
}

static int tokenize_stdin(tokenize_state *s, bool decode)
{
    char *line = NULL, err[512];
    size_t cap = 0;
    ssize_t n;
    int rc = MR_EXIT_OK;
    for (unsigned long line_no = 1; rc == MR_EXIT_OK && (n = getline(&line, &cap, stdin)) >= 0;
         line_no++) {
        cJSON *value = cJSON_ParseWithLength(line, (size_t)n);
        int status = !value ? (snprintf(err, sizeof err, "not valid JSON"), MR_ENGINE_EINVAL)
                     : decode ? decode_line(s, value, err, sizeof err)
                              : encode_line(s, value, err, sizeof err);
        cJSON_Delete(value);
        if (status == MR_ENGINE_ENOMEM) {
            fprintf(stderr, "moerun tokenize: out of memory\n");
            rc = MR_EXIT_FAILED;
        } else if (status != MR_ENGINE_OK) {
            fprintf(stderr, "moerun tokenize: stdin:%lu: %s\n", line_no, err);
            rc = MR_EXIT_INVALID;
        }
        fflush(stdout);
    }
    free(line);
    return rc;
}

int mr_runner_tokenize(int argc, char **argv)
{
    mr_runner_args args;
    int rc = mr_runner_parse_args(argc, argv, MR_OPT_DECODE, "PATH", &args);
    if (rc >= 0) {
        mr_runner_free_args(&args);
        return rc;
    }
    char err[1024];
    mr_tokenizer *tok = NULL;
    int loaded = mr_tokenizer_load(args.operand, &tok, err, sizeof err);
    if (loaded != MR_ENGINE_OK) {
        fprintf(stderr, "moerun tokenize: %s\n", err);
        rc = loaded == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
    } else {
        tokenize_state s = {.tok = tok};
        rc = tokenize_stdin(&s, args.decode);
        mr_tokens_free(&s.ids);
        free(s.text);
    }
    mr_tokenizer_free(tok);
    mr_runner_free_args(&args);
    return rc;
}
