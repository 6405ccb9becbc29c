/*
 * Serving a planned job on this process: read the shards' lines in input
 * order, turn each into a tokenized generation (or an error record), keep
 * the engine full, and write results and errors in input order.
 *
 * Completions finish out of order under continuous batching; a reorder
 * window holds finished lines until every earlier line is done, so the
 * output files are the same bytes whatever the batch size or timing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "runner/runner.h"

/* One input line's output, waiting for its turn to be written. */
typedef struct {
    bool ready, is_error;
    char *line; /* formatted, with its newline */
    size_t len;
    /* What the result line needs once the completion arrives. */
    char *custom_id, *model;
    mr_endpoint endpoint;
    uint32_t file_index;
    uint64_t line_no;
} slot;

typedef struct {
    const mr_job *job;
    const mr_plan *plan;
    mr_model *model;
    mr_engine *engine;
    const char *model_name;
    int64_t created;
    FILE *results, *errors;
    slot *window; /* ring: entry of sequence number n at n % cap, for [head, head + len) */
    size_t cap, len;
    uint64_t head; /* sequence number of window's first entry */
    mr_tokens tokens;
    mr_completion_out *done;
    size_t done_cap;
    uint64_t n_ok, n_failed, prompt_tokens, completion_tokens;
} server;

static slot *window_at(server *s, uint64_t seq)
{
    return &s->window[seq % s->cap];
}

static int window_push(server *s, uint64_t *seq)
{
    if (s->len == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        slot *w = calloc(cap, sizeof *w);
        if (!w)
            return MR_EXIT_FAILED;
        for (size_t i = 0; i < s->len; i++)
            w[(s->head + i) % cap] = *window_at(s, s->head + i);
        free(s->window);
        s->window = w;
        s->cap = cap;
    }
    *seq = s->head + s->len++;
    *window_at(s, *seq) = (slot){0};
    return MR_EXIT_OK;
}

/* Writes the finished head of the window. */
static int window_flush(server *s)
{
    while (s->len > 0 && window_at(s, s->head)->ready) {
        slot *e = window_at(s, s->head);
        FILE *to = e->is_error ? s->errors : s->results;
        bool ok = fwrite(e->line, 1, e->len, to) == e->len;
        free(e->line);
        free(e->custom_id);
        free(e->model);
        *e = (slot){0};
        s->head++;
        s->len--;
        if (!ok) {
            perror("moerun run: writing results");
            return MR_EXIT_FAILED;
        }
    }
    return MR_EXIT_OK;
}

static int take_buf(slot *e, mr_buf *buf, bool is_error)
{
    e->line = buf->data;
    e->len = buf->len;
    e->ready = true;
    e->is_error = is_error;
    return MR_EXIT_OK;
}

static int add_error(server *s, const char *file, uint64_t line_no, const mr_request_error *error)
{
    uint64_t seq;
    mr_buf buf = {0};
    if (window_push(s, &seq) != MR_EXIT_OK ||
        mr_error_format(&buf, s->job->job_name, file, line_no, error) != MR_JOBS_OK) {
        mr_buf_free(&buf);
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    s->n_failed++;
    return take_buf(window_at(s, seq), &buf, true);
}

static int complete(server *s, const mr_completion_out *c)
{
    slot *e = window_at(s, c->handle);
    mr_request req = {.custom_id = e->custom_id,
                      .endpoint = e->endpoint,
                      .model = e->model,
                      .file_index = e->file_index,
                      .line_no = e->line_no};
    mr_completion completion = {.text = c->text,
                                .text_len = c->text_len,
                                .finish_reason = c->finish == MR_FINISH_STOP ? "stop" : "length",
                                .prompt_tokens = c->prompt_tokens,
                                .completion_tokens = c->completion_tokens};
    mr_buf buf = {0};
    int rc = mr_result_format(&buf, s->job->job_name, s->model_name, &req, &completion,
                              s->created);
    free(c->text);
    if (rc != MR_JOBS_OK) {
        mr_buf_free(&buf);
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    s->n_ok++;
    s->prompt_tokens += (uint64_t)c->prompt_tokens;
    s->completion_tokens += (uint64_t)c->completion_tokens;
    return take_buf(e, &buf, false);
}

/* One engine step; finished completions go to the window. */
static int step(server *s)
{
    char err[1024];
    size_t n = 0;
    if (mr_engine_step(s->engine, s->done, s->done_cap, &n, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    int rc = MR_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        int one = complete(s, &s->done[i]);
        rc = rc == MR_EXIT_OK ? one : rc;
    }
    return rc == MR_EXIT_OK ? window_flush(s) : rc;
}

/* The prompt text of a request: the completion prompt, or the chat
 * rendered with the model's template.  On failure *error is filled. */
static char *prompt_text(server *s, const mr_request *req, mr_request_error *error,
                         const char *file)
{
    if (req->endpoint != MR_ENDPOINT_CHAT)
        return strdup(req->prompt);
    mr_chat_turn *turns = calloc(req->n_messages ? req->n_messages : 1, sizeof *turns);
    char *text = NULL, err[256];
    if (!turns)
        return NULL;
    for (size_t i = 0; i < req->n_messages; i++)
        turns[i] = (mr_chat_turn){req->messages[i].role, req->messages[i].content};
    if (mr_chat_format(s->model, turns, req->n_messages, &text, err, sizeof err) !=
        MR_ENGINE_OK) {
        snprintf(error->code, sizeof error->code, "unsupported_chat_template");
        snprintf(error->message, sizeof error->message, "%s:%" PRIu64 ": %s", file,
                 req->line_no, err);
        error->custom_id = req->custom_id;
    }
    free(turns);
    return text;
}

static int submit(server *s, const mr_request *req, const char *file)
{
    mr_request_error error = {0};
    char *text = prompt_text(s, req, &error, file);
    if (!text)
        return error.code[0] ? add_error(s, file, req->line_no, &error) : MR_EXIT_FAILED;
    char err[256]; /* leaves room for "file:line: " in a 512-byte message */
    s->tokens.count = 0;
    int rc = mr_tokenizer_encode(mr_model_tokenizer(s->model), text, strlen(text), &s->tokens,
                                 err, sizeof err);
    free(text);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    if ((int64_t)s->tokens.count > s->job->input_max_prompt_tokens) {
        mr_request_error_prompt_too_long(&error, req, file, (int64_t)s->tokens.count,
                                         s->job->input_max_prompt_tokens);
        return add_error(s, file, req->line_no, &error);
    }
    if (!mr_engine_fits(s->engine, s->tokens.count, err, sizeof err)) {
        mr_request_error_prompt_too_long(&error, req, file, (int64_t)s->tokens.count,
                                         s->job->input_max_prompt_tokens);
        snprintf(error.message, sizeof error.message, "%s:%" PRIu64 ": %s", file, req->line_no,
                 err);
        return add_error(s, file, req->line_no, &error);
    }
    while (!mr_engine_has_room(s->engine))
        if ((rc = step(s)) != MR_EXIT_OK)
            return rc;
    uint64_t seq;
    if (window_push(s, &seq) != MR_EXIT_OK)
        return MR_EXIT_FAILED;
    slot *e = window_at(s, seq);
    e->custom_id = strdup(req->custom_id);
    e->model = req->model ? strdup(req->model) : NULL;
    e->endpoint = req->endpoint;
    e->file_index = req->file_index;
    e->line_no = req->line_no;
    const mr_sampling *sp = &req->sampling;
    mr_generation gen = {.handle = seq,
                         .prompt = s->tokens.ids,
                         .n_prompt = s->tokens.count,
                         .sampling = {.max_tokens = (int)sp->max_tokens,
                                      .temperature = sp->temperature,
                                      .top_p = sp->top_p,
                                      .top_k = (int)sp->top_k,
                                      .seed = sp->seed,
                                      .stop = (const char *const *)sp->stop.items,
                                      .n_stop = sp->stop.count}};
    if (!e->custom_id || mr_engine_submit(s->engine, &gen, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", e->custom_id ? err : "out of memory");
        return MR_EXIT_FAILED;
    }
    return MR_EXIT_OK;
}

static bool is_duplicate(const mr_plan *plan, uint32_t file, uint64_t line,
                         const mr_duplicate **dup)
{
    for (size_t i = 0; i < plan->n_duplicates; i++)
        if (plan->duplicates[i].file_index == file && plan->duplicates[i].line_no == line) {
            *dup = &plan->duplicates[i];
            return true;
        }
    return false;
}

static int serve_line(server *s, mr_request_parser *parser, const mr_shard *shard,
                      const mr_line *line)
{
    const char *file = s->plan->files[shard->file_index].path;
    mr_request_error error = {0};
    const mr_duplicate *dup;
    if (line->too_long) {
        mr_request_error_line_too_long(&error, file, line->line_no, line->len,
                                       (uint64_t)s->job->input_max_line_bytes);
        return add_error(s, file, line->line_no, &error);
    }
    if (mr_line_is_blank(line->data, line->len))
        return MR_EXIT_OK;
    mr_request req;
    if (mr_request_parse(parser, line->data, line->len, file, shard->file_index, line->line_no,
                         &req, &error) != MR_JOBS_OK)
        return add_error(s, file, line->line_no, &error);
    if (is_duplicate(s->plan, shard->file_index, line->line_no, &dup)) {
        mr_request_error_duplicate(&error, req.custom_id, file, line->line_no,
                                   s->plan->files[dup->first_file_index].path, dup->first_line_no);
        return add_error(s, file, line->line_no, &error);
    }
    return submit(s, &req, file);
}

static int serve_shard(server *s, mr_request_parser *parser, const mr_shard *shard)
{
    char err[1024];
    mr_line_reader *reader;
    const mr_plan_file *f = &s->plan->files[shard->file_index];
    if (mr_line_reader_open(&reader, f->path, shard->begin, shard->end, shard->first_line,
                            (size_t)s->job->input_max_line_bytes, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    int rc = MR_EXIT_OK, got;
    mr_line line;
    while (rc == MR_EXIT_OK && (got = mr_line_reader_next(reader, &line, err, sizeof err)) == 1)
        rc = serve_line(s, parser, shard, &line);
    if (rc == MR_EXIT_OK && got < 0) {
        fprintf(stderr, "moerun run: %s\n", err);
        rc = MR_EXIT_FAILED;
    }
    mr_line_reader_close(reader);
    return rc;
}

static FILE *open_output(const mr_job *job, const char *name)
{
    char *path = mr_runner_path(job->job_run_dir, name);
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f)
        perror(path ? path : "moerun run");
    free(path);
    return f;
}

static int close_output(FILE *f)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok)
        perror("moerun run: closing results");
    return ok ? MR_EXIT_OK : MR_EXIT_FAILED;
}

static int load_engine(server *s)
{
    const mr_job *job = s->job;
    char err[2048];
    mr_model_options mo = {.backend = job->engine_backend == MR_BACKEND_REF ? "ref" : "cpu",
                           .threads = (int)job->engine_threads};
    if (mr_model_load(job->model_path, &mo, &s->model, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: [model] path: %s\n", err);
        return MR_EXIT_INVALID;
    }
    mr_engine_options eo = {.max_batch_tokens = (int)job->engine_max_batch_tokens,
                            .max_sequences = (int)job->engine_max_sequences,
                            .kv_block_size = (int)job->engine_kv_block_size,
                            .kv_blocks = (int)job->engine_kv_blocks};
    int rc = mr_engine_create(s->model, &eo, &s->engine, err, sizeof err);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return rc == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
    }
    s->done_cap = (size_t)eo.max_sequences;
    s->done = calloc(s->done_cap, sizeof *s->done);
    return s->done ? MR_EXIT_OK : MR_EXIT_FAILED;
}

/* The model's name in result lines: its folder's last component. */
static const char *model_name(const char *path)
{
    const char *end = path + strlen(path);
    while (end > path && end[-1] == '/')
        end--;
    const char *start = end;
    while (start > path && start[-1] != '/')
        start--;
    static char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(end - start), start);
    return name;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int mr_runner_serve(const mr_job *job, const mr_plan *plan)
{
    server s = {.job = job, .plan = plan, .model_name = model_name(job->model_path),
                .created = (int64_t)time(NULL)};
    double start = now();
    int rc = load_engine(&s);
    mr_request_parser *parser = rc == MR_EXIT_OK ? mr_request_parser_new(job) : NULL;
    if (rc == MR_EXIT_OK && !parser)
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK) {
        s.results = open_output(job, MR_RUN_RESULTS);
        s.errors = open_output(job, MR_RUN_ERRORS);
        rc = s.results && s.errors ? MR_EXIT_OK : MR_EXIT_FAILED;
    }
    for (size_t i = 0; rc == MR_EXIT_OK && i < plan->n_shards; i++)
        rc = serve_shard(&s, parser, &plan->shards[i]);
    while (rc == MR_EXIT_OK && mr_engine_in_flight(s.engine) > 0)
        rc = step(&s);
    if (rc == MR_EXIT_OK)
        rc = window_flush(&s);
    if (s.results && close_output(s.results) != MR_EXIT_OK)
        rc = MR_EXIT_FAILED;
    if (s.errors && close_output(s.errors) != MR_EXIT_OK)
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK) {
        double seconds = now() - start;
        uint64_t tokens = s.prompt_tokens + s.completion_tokens;
        printf("served %" PRIu64 " request%s, %" PRIu64 " failed; %" PRIu64 " prompt + %" PRIu64
               " completion tokens in %.1f s (%.0f tokens/s)\n",
               s.n_ok, s.n_ok == 1 ? "" : "s", s.n_failed, s.prompt_tokens, s.completion_tokens, seconds,
               seconds > 0 ? tokens / seconds : 0.0);
        printf("results: %s/%s\nerrors:  %s/%s\n", job->job_run_dir, MR_RUN_RESULTS,
               job->job_run_dir, MR_RUN_ERRORS);
    }
    for (size_t i = 0; i < s.len; i++) {
        slot *e = window_at(&s, s.head + i);
        free(e->line);
        free(e->custom_id);
        free(e->model);
    }
    free(s.window);
    free(s.done);
    mr_tokens_free(&s.tokens);
    mr_request_parser_free(parser);
    mr_engine_free(s.engine);
    mr_model_free(s.model);
    return rc;
}
