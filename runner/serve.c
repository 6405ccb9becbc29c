/*
 * Serving a planned job on one rank: claim shards, read their lines in
 * order, hand each to the engine as its text, token ids or chat turns (the
 * engine formats and tokenizes it, or says why it cannot be served: an
 * error record), one generation per prompt and choice (choices.c), keep
 * the engine full, and write each record to its shard's part files as soon
 * as it is made.
 *
 * Ranks step together: before every step each rank says whether it still
 * has work and whether it wants a shard, the world gathers that, and every
 * rank applies the same rule to the same answers (shards in order, to the
 * ranks that want one, lowest rank first), so the shard table rank 0 keeps
 * needs no further round trip.  A rank with nothing to do still steps,
 * with zero tokens, because other ranks' tokens may need its experts.
 *
 * Completions finish out of order under continuous batching; each record
 * goes to its part file behind its line number when it is made, so nothing
 * finished waits for a longer request before it, and the join (parts.c)
 * puts the records back in input order: the output files are the same
 * bytes whatever the batch size, rank count or timing.
 *
 * The same gather carries checkpoints and stops: rank 0 says when
 * [checkpoint] interval_seconds have passed, any rank that a stop signal
 * reached says so, and every rank then syncs its part files and joins the
 * checkpoint (commit.c) between the same two steps.  A resumed run skips
 * the shards its checkpoint has done; of the others, after cutting their
 * parts back to what was committed, it serves the lines that were in
 * flight, going on from the tokens they had generated, and the lines never
 * read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "runner/runner.h"

/* A generation in the engine (its handle is its index): the line it is a
 * choice of. */
typedef struct {
    bool used;
    uint32_t line; /* in server.lines */
    uint32_t choice;
} slot;

/* The part files of a shard this rank writes to. */
typedef struct {
    uint32_t shard;
    FILE *results, *errors;
} part;

/* What each rank tells the others before a step. */
typedef struct {
    int32_t wants_shard, busy;
    int32_t stop;       /* the stop signal that reached this rank, or 0 */
    int32_t checkpoint; /* rank 0: interval_seconds have passed */
    int32_t sample;     /* rank 0: [report] progress_seconds have passed */
    uint64_t done;             /* records finished in this attempt */
    uint64_t rows, generated;  /* this attempt's engine: mr_engine_stats */
} rank_state;

typedef struct {
    const mr_job *job;
    const mr_plan *plan;
    mr_runner_world world;
    mr_model *model;
    mr_engine *engine;
    mr_runner_balancer *balancer;
    mr_checkpoint_state *state; /* committed progress: what is left to serve */
    mr_runner_commit *commit;
    mr_runner_watchdog *watchdog;
    mr_runner_meter *meter;
    const char *model_name;
    int64_t created;
    part *parts; /* the shards with part files open: read, or with lines in flight */
    size_t n_parts, parts_cap;
    /* The shard being read. */
    const mr_shard *reading;
    uint64_t skip_before; /* its lines before this one are committed or carried */
    bool carrying;        /* its checkpoint had lines in flight */
    mr_line_reader *reader;
    mr_request_parser *parser;
    size_t next_shard; /* the first shard nobody has claimed */
    rank_state *states; /* [world size]: every rank's, gathered before each step */
    slot *slots;        /* [max_sequences] */
    mr_runner_line *lines; /* [max_sequences]: a line has one generation or more */
    /* A line read and parsed whose generations wait for room in the
     * engine: the parser keeps its request until the next line is read. */
    bool holding;
    mr_request held;
    mr_completion_out *done;
    size_t done_cap;
    uint64_t n_ok, n_failed, prompt_tokens, completion_tokens;
} server;

/* The part files of `shard`, opened when this rank first writes to it. */
static int part_files(server *s, uint32_t shard, part **out)
{
    for (size_t i = 0; i < s->n_parts; i++)
        if (s->parts[i].shard == shard) {
            *out = &s->parts[i];
            return MR_EXIT_OK;
        }
    if (s->n_parts == s->parts_cap) {
        size_t cap = s->parts_cap ? 2 * s->parts_cap : 4;
        part *grown = realloc(s->parts, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "moerun run: out of memory\n");
            return MR_EXIT_FAILED;
        }
        s->parts = grown;
        s->parts_cap = cap;
    }
    part *p = &s->parts[s->n_parts];
    *p = (part){.shard = shard};
    int rc = mr_runner_parts_open(s->job->job_run_dir, shard, &p->results, &p->errors);
    if (rc != MR_EXIT_OK) {
        if (p->results)
            fclose(p->results);
        return rc;
    }
    s->n_parts++;
    *out = p;
    return MR_EXIT_OK;
}

static int close_part(server *s, part *p)
{
    int rc = mr_runner_parts_close(p->results), closed = mr_runner_parts_close(p->errors);
    rc = rc == MR_EXIT_OK ? closed : rc;
    *p = s->parts[--s->n_parts];
    return rc;
}

/* A shard that is done has no more records to write. */
static int close_if_done(server *s, uint32_t shard)
{
    for (size_t i = 0; s->state->shards[shard].done && i < s->n_parts; i++)
        if (s->parts[i].shard == shard)
            return close_part(s, &s->parts[i]);
    return MR_EXIT_OK;
}

/* Writes the record of a line (taking buf) to its shard's part and
 * commits it. */
static int write_record(server *s, uint32_t shard, uint64_t line_no, bool is_error, mr_buf *buf,
                        int64_t prompt_tokens, int64_t completion_tokens)
{
    part *p;
    size_t bytes;
    int rc = part_files(s, shard, &p);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_parts_write(is_error ? p->errors : p->results, line_no, buf->data,
                                   buf->len, &bytes);
    mr_buf_free(buf);
    if (rc != MR_EXIT_OK)
        return rc;
    mr_runner_commit_written(s->commit, shard, line_no, is_error, bytes, prompt_tokens,
                             completion_tokens);
    return close_if_done(s, shard);
}

static int add_error(server *s, const char *file, uint64_t line_no, const mr_request_error *error)
{
    mr_buf buf = {0};
    if (mr_error_format(&buf, s->job->job_name, file, line_no, error) != MR_JOBS_OK) {
        mr_buf_free(&buf);
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    s->n_failed++;
    return write_record(s, s->reading->id, line_no, true, &buf, 0, 0);
}

/* A finished generation; its line's record once it was the last. */
static int complete(server *s, mr_completion_out *c)
{
    slot *e = &s->slots[c->handle];
    mr_runner_line *line = &s->lines[e->line];
    uint32_t choice = e->choice;
    *e = (slot){0};
    mr_runner_commit_choice_done(s->commit, line->shard, line->req.line_no, choice);
    if (!mr_runner_line_done(line, choice, c))
        return MR_EXIT_OK;
    mr_buf buf = {0};
    int64_t prompt_tokens, completion_tokens;
    int rc = mr_runner_line_format(line, mr_model_tokenizer(s->model), s->job->job_name,
                                   s->model_name, s->created, &buf, &prompt_tokens,
                                   &completion_tokens);
    uint32_t shard = line->shard;
    uint64_t line_no = line->req.line_no;
    mr_runner_line_free(line);
    if (rc != MR_EXIT_OK) {
        mr_buf_free(&buf);
        return rc;
    }
    s->n_ok++;
    s->prompt_tokens += (uint64_t)prompt_tokens;
    s->completion_tokens += (uint64_t)completion_tokens;
    return write_record(s, shard, line_no, false, &buf, prompt_tokens, completion_tokens);
}

/* One engine step; finished completions go to the part files. */
static int step(server *s)
{
    char err[1024];
    size_t n = 0;
    if (mr_engine_step(s->engine, s->done, s->done_cap, &n, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    int rc = mr_runner_balancer_step(s->balancer);
    for (size_t i = 0; i < n; i++) {
        if (rc == MR_EXIT_OK)
            rc = complete(s, &s->done[i]);
        mr_completion_out_free(&s->done[i]);
    }
    return rc;
}

/* The request's error record for a prompt mr_engine_prepare refused, or
 * one over [input] max_prompt_tokens, which comes between its verdicts. */
static bool refused(server *s, const mr_request *req, const char *file, mr_prompt_verdict verdict,
                    size_t n_prompt, const char *why, mr_request_error *error)
{
    if (verdict != MR_PROMPT_CHAT_UNSUPPORTED && verdict != MR_PROMPT_BAD_TOKEN &&
        (int64_t)n_prompt > s->job->input_max_prompt_tokens) {
        mr_request_error_prompt_too_long(error, req, file, (int64_t)n_prompt,
                                         s->job->input_max_prompt_tokens);
        return true;
    }
    if (verdict == MR_PROMPT_OK)
        return false;
    *error = (mr_request_error){.custom_id = req->custom_id};
    snprintf(error->code, sizeof error->code, "%s",
             verdict == MR_PROMPT_CHAT_UNSUPPORTED ? "unsupported_chat_template"
             : verdict == MR_PROMPT_NO_ROOM        ? "context_length_exceeded"
             : verdict == MR_PROMPT_BAD_TOKEN      ? "invalid_value"
                                                   : "prompt_too_long");
    snprintf(error->message, sizeof error->message, "%s:%" PRIu64 ": %s", file, req->line_no,
             why);
    return true;
}

/* Prompt `prompt` of a request as a generation: its chat turns (turns
 * has room for them), text or token ids, and its sampling settings. */
static mr_generation generation_of(const mr_request *req, size_t prompt, mr_chat_turn *turns)
{
    const mr_sampling *sp = &req->sampling;
    mr_generation gen = {.sampling = {.max_tokens = (int)sp->max_tokens,
                                      .temperature = sp->temperature,
                                      .top_p = sp->top_p,
                                      .top_k = (int)sp->top_k,
                                      .seed = sp->seed,
                                      .stop = (const char *const *)sp->stop.items,
                                      .n_stop = sp->stop.count,
                                      .presence_penalty = sp->presence_penalty,
                                      .frequency_penalty = sp->frequency_penalty},
                         .logprobs = req->logprobs,
                         .top_logprobs = req->top_logprobs,
                         .prompt_logprobs = req->echo};
    if (req->endpoint == MR_ENDPOINT_CHAT) {
        for (size_t i = 0; i < req->n_messages; i++)
            turns[i] = (mr_chat_turn){req->messages[i].role, req->messages[i].content};
        gen.turns = turns;
        gen.n_turns = req->n_messages;
        gen.chat_template_kwargs = req->chat_template_kwargs;
    } else if (req->prompts[prompt].text) {
        gen.text = req->prompts[prompt].text;
        gen.text_len = strlen(gen.text);
    } else {
        gen.prompt = req->prompts[prompt].ids;
        gen.n_prompt = req->prompts[prompt].n_ids;
    }
    return gen;
}

/* Formats and tokenizes a prompt (its ids then in gen, valid until the
 * engine's next call); *error filled when it cannot be served. */
static int prepare(server *s, const mr_request *req, const char *file, mr_generation *gen,
                   bool *refuse, mr_request_error *error)
{
    char err[256]; /* leaves room for "file:line: " in a 512-byte message */
    mr_prompt_verdict verdict;
    if (mr_engine_prepare(s->engine, gen, &verdict, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    *refuse = refused(s, req, file, verdict, gen->n_prompt, err, error);
    return MR_EXIT_OK;
}

/* The generations of a request, one per prompt and choice: every prompt is
 * checked before any goes in, so a line is served whole or refused whole,
 * and a completion that cannot fit after its prompt is refused, as
 * OpenAI's API refuses it, rather than cut short where the sequence ends.
 * A line waits (s->holding) until the engine has room for all of it. */
static int submit(server *s, const mr_request *req, const char *file)
{
    size_t prompts = req->endpoint == MR_ENDPOINT_CHAT ? 1 : req->n_prompts;
    size_t choices = prompts * (size_t)req->n;
    mr_request_error error = {0};
    if (choices > s->done_cap) {
        error = (mr_request_error){.custom_id = req->custom_id};
        snprintf(error.code, sizeof error.code, "invalid_value");
        snprintf(error.message, sizeof error.message,
                 "%s:%" PRIu64 ": %zu prompt%s x n = %lld make %zu generations, more than "
                 "[engine] max_sequences = %lld runs at once",
                 file, req->line_no, prompts, prompts == 1 ? "" : "s", (long long)req->n,
                 choices, (long long)s->done_cap);
        return add_error(s, file, req->line_no, &error);
    }
    if (mr_engine_room(s->engine) < choices) {
        s->holding = true;
        s->held = *req;
        return MR_EXIT_OK;
    }
    s->holding = false;
    mr_chat_turn *turns = calloc(req->n_messages ? req->n_messages : 1, sizeof *turns);
    if (!turns) {
        fprintf(stderr, "moerun run: out of memory\n");
        return MR_EXIT_FAILED;
    }
    int rc = MR_EXIT_OK;
    bool refuse = false;
    mr_generation gen;
    for (size_t i = 0; rc == MR_EXIT_OK && !refuse && i < prompts; i++) {
        gen = generation_of(req, i, turns);
        rc = prepare(s, req, file, &gen, &refuse, &error);
    }
    if (rc == MR_EXIT_OK && refuse)
        rc = add_error(s, file, req->line_no, &error);
    size_t at = 0;
    while (s->lines[at].used)
        at++;
    mr_runner_line *line = &s->lines[at];
    uint32_t shard = s->reading->id;
    if (rc == MR_EXIT_OK && !refuse)
        rc = mr_runner_line_start(line, shard, req);
    for (size_t k = 0; rc == MR_EXIT_OK && !refuse && k < choices; k++) {
        size_t prompt = k / (size_t)req->n;
        /* The engine keeps the last prompt it prepared: a list of them is
         * prepared anew, each before its first choice. */
        if (prompts > 1 && k % (size_t)req->n == 0) {
            gen = generation_of(req, prompt, turns);
            rc = prepare(s, req, file, &gen, &refuse, &error);
            if (rc == MR_EXIT_OK && refuse) {
                fprintf(stderr, "moerun run: %s\n", error.message);
                rc = MR_EXIT_FAILED; /* it was served a moment ago */
            }
        }
        size_t handle = 0;
        while (s->slots[handle].used)
            handle++;
        s->slots[handle] = (slot){.used = true, .line = (uint32_t)at, .choice = (uint32_t)k};
        gen.handle = handle;
        gen.sampling.seed = mr_request_choice_seed(req, (uint32_t)k);
        gen.generated = NULL;
        gen.n_generated = 0;
        if (s->carrying)
            mr_runner_commit_carried(s->commit, shard, req->line_no, (uint32_t)k, &gen.generated,
                                     &gen.n_generated);
        char err[512];
        int submitted = rc == MR_EXIT_OK ? mr_engine_submit(s->engine, &gen, err, sizeof err)
                                         : MR_ENGINE_OK;
        if (submitted != MR_ENGINE_OK) {
            fprintf(stderr, "moerun run: %s:%" PRIu64 ": %s\n", file, req->line_no, err);
            rc = submitted == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
        }
        if (rc == MR_EXIT_OK)
            rc = mr_runner_commit_submitted(s->commit, shard, req->line_no, (uint32_t)k, handle);
    }
    free(turns);
    return rc;
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

/* Reads the current shard's lines into the engine while it has room;
 * a shard that runs out is closed, and the rank asks for another. */
static int feed(server *s)
{
    char err[1024];
    int rc = MR_EXIT_OK;
    while (rc == MR_EXIT_OK && s->reader && mr_engine_has_room(s->engine)) {
        if (s->holding) {
            /* A line counts as read once it is in the engine: a checkpoint
             * before that has it read again. */
            rc = submit(s, &s->held, s->plan->files[s->reading->file_index].path);
            if (s->holding)
                break;
            mr_runner_commit_read(s->commit, s->reading->id, s->held.line_no);
            continue;
        }
        mr_line line;
        int got = mr_line_reader_next(s->reader, &line, err, sizeof err);
        if (got == 1 && (line.line_no >= s->skip_before ||
                         (s->carrying &&
                          mr_runner_commit_is_carried(s->commit, s->reading->id, line.line_no)))) {
            rc = serve_line(s, s->parser, s->reading, &line);
            if (!s->holding)
                mr_runner_commit_read(s->commit, s->reading->id, line.line_no);
        }
        if (got == 1)
            continue;
        if (got < 0) {
            fprintf(stderr, "moerun run: %s\n", err);
            rc = MR_EXIT_FAILED;
        } else {
            mr_runner_commit_read_all(s->commit, s->reading->id);
            rc = close_if_done(s, s->reading->id);
        }
        mr_line_reader_close(s->reader);
        s->reader = NULL;
    }
    return rc;
}

static int open_shard(server *s, size_t index)
{
    char err[1024];
    const mr_shard *shard = &s->plan->shards[index];
    const mr_plan_file *f = &s->plan->files[shard->file_index];
    int rc = mr_runner_parts_cut(s->job->job_run_dir, &s->state->shards[index]);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_commit_open(s->commit, shard->id);
    if (rc != MR_EXIT_OK)
        return rc;
    s->skip_before = s->state->shards[index].next_line;
    s->carrying = s->state->shards[index].n_in_flight > 0;
    if (mr_line_reader_open(&s->reader, f->path, shard->begin, shard->end, shard->first_line,
                            (size_t)s->job->input_max_line_bytes, err, sizeof err) != MR_JOBS_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return MR_EXIT_FAILED;
    }
    s->reading = shard;
    return MR_EXIT_OK;
}

/* The first shard from `next` on that the checkpoint has not done. */
static size_t next_open_shard(const server *s, size_t next)
{
    while (next < s->plan->n_shards && s->state->shards[next].done)
        next++;
    return next;
}

/* Gathers every rank's state and hands out shards; *done when no rank has
 * work left and no shard is unclaimed.  *checkpoint when one is due,
 * *sample when the meters are, and *stop (the signal) when a stop signal
 * reached any rank. */
static int claim_shards(server *s, bool *done, bool *checkpoint, bool *sample, int *stop)
{
    char err[512];
    int size = s->world.size;
    mr_engine_stats st;
    mr_engine_get_stats(s->engine, &st);
    rank_state mine = {.wants_shard = !s->reader && mr_engine_has_room(s->engine),
                       .busy = s->reader || mr_engine_in_flight(s->engine) > 0,
                       .stop = mr_runner_stop_signal(),
                       .checkpoint = s->world.rank == 0 && mr_runner_commit_due(s->commit),
                       .sample = s->world.rank == 0 && mr_runner_meter_due(s->meter),
                       .done = s->n_ok + s->n_failed,
                       .rows = st.tokens,
                       .generated = st.generated};
    rank_state *all = s->states;
    int rc = mr_comm_ctrl_allgather(s->world.comm, &mine, sizeof mine, all, err, sizeof err);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: %s\n", s->world.rank, err);
        return MR_EXIT_FAILED;
    }
    bool busy = false;
    uint64_t records = 0, rows = 0, generated = 0;
    *checkpoint = all[0].checkpoint;
    *sample = all[0].sample;
    *stop = 0;
    for (int r = 0; r < size; r++) {
        records += all[r].done;
        rows += all[r].rows;
        generated += all[r].generated;
        busy = busy || all[r].busy;
        *stop = *stop ? *stop : all[r].stop;
        s->next_shard = next_open_shard(s, s->next_shard);
        if (!all[r].wants_shard || s->next_shard >= s->plan->n_shards)
            continue;
        size_t shard = s->next_shard++;
        busy = true;
        if (r == s->world.rank && (rc = open_shard(s, shard)) == MR_EXIT_OK)
            rc = feed(s);
    }
    *done = !busy;
    mr_runner_meter_live(s->meter, records, rows, generated);
    return rc;
}

/* [engine] max_sequences and max_batch_tokens at 0: sized to each rank's
 * memory, every rank then taking the narrowest so the steps agree. */
static int engine_widths(server *s, mr_engine_options *eo)
{
    bool seqs_auto = eo->max_sequences == 0, tokens_auto = eo->max_batch_tokens == 0;
    if (!seqs_auto && !tokens_auto)
        return MR_EXIT_OK;
    char err[1024];
    if (mr_engine_auto_widths(s->model, eo, err, sizeof err) != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: [engine]: %s\n", err);
        return MR_EXIT_FAILED;
    }
    if (s->world.comm && mr_comm_size(s->world.comm) > 1) {
        int mine[2] = {eo->max_sequences, eo->max_batch_tokens};
        int *all = calloc((size_t)mr_comm_size(s->world.comm) * 2, sizeof *all);
        if (!all || mr_comm_ctrl_allgather(s->world.comm, mine, sizeof mine, all, err,
                                           sizeof err) != MR_ENGINE_OK) {
            free(all);
            fprintf(stderr, "moerun run: [engine] widths: %s\n", all ? err : "out of memory");
            return MR_EXIT_FAILED;
        }
        for (int r = 0; r < mr_comm_size(s->world.comm); r++) {
            eo->max_sequences = all[2 * r] < eo->max_sequences ? all[2 * r] : eo->max_sequences;
            eo->max_batch_tokens =
                all[2 * r + 1] < eo->max_batch_tokens ? all[2 * r + 1] : eo->max_batch_tokens;
        }
        free(all);
    }
    if (s->world.rank == 0) {
        printf("job %s: %d sequences and %d tokens a step, sized to the memory left "
               "([engine] %s = 0)\n",
               s->job->job_name, eo->max_sequences, eo->max_batch_tokens,
               seqs_auto && tokens_auto ? "max_sequences and max_batch_tokens"
               : seqs_auto              ? "max_sequences"
                                        : "max_batch_tokens");
        fflush(stdout);
    }
    return MR_EXIT_OK;
}

static int load_engine(server *s)
{
    const mr_job *job = s->job;
    char err[2048], *config = mr_runner_path(job->model_path, "config.json");
    mr_model_config cfg;
    int rc = config ? mr_config_load(config, &cfg, err, sizeof err) : MR_ENGINE_ENOMEM;
    free(config);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: [model] path: %s\n", err);
        return MR_EXIT_INVALID;
    }
    int ranks = s->world.mpi ? (int)job->parallel_ranks : 1, threads = (int)job->engine_threads;
    mr_engine_balance_options balance;
    mr_runner_balance_options(job, &balance);
    int slots = cfg.num_experts > 0
                    ? mr_engine_balance_slots_per_rank(&balance, cfg.num_experts, ranks)
                    : 1;
    /* Widths left to the engine are known after the load: room for the
     * widest it may choose. */
    mr_engine_options widths = {.max_batch_tokens = (int)job->engine_max_batch_tokens,
                                .max_sequences = (int)job->engine_max_sequences};
    size_t capacity =
        mr_model_exchange_bytes(&cfg, slots, mr_engine_widths_most_tokens(&widths));
    rc = mr_runner_world_init(&s->world, job, capacity);
    if (rc != MR_EXIT_OK)
        return rc;
    if ((rc = mr_runner_commit_new(job, s->state, s->world.comm, &s->commit)) != MR_EXIT_OK)
        return rc;
    if ((rc = mr_runner_watchdog_start(job, s->world.rank, s->world.size, &s->watchdog)) !=
        MR_EXIT_OK)
        return rc;
    mr_eplb_placement placement = {0};
    bool moe = mr_config_moe_layers(&cfg) > 0;
    const mr_checkpoint_state *resume = s->state->counters.attempts > 1 ? s->state : NULL;
    if (moe && (rc = mr_runner_eplb_initial(job, &cfg, ranks,
                                            mr_engine_balance_nodes(s->world.comm),
                                            s->world.rank == 0, resume, &placement)) !=
                   MR_EXIT_OK)
        return rc;
    if (threads <= 0) {
        /* Ranks that share a host share its cores. */
        int here = 0;
        for (int r = 0; r < s->world.size; r++)
            here += mr_comm_host_of(s->world.comm, r) == mr_comm_host_of(s->world.comm, s->world.rank);
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores / here > 1 ? (int)(cores / here) : 1;
    }
    mr_model_options mo = {.backend = mr_runner_backend_name(job),
                           .threads = threads,
                           .comm = s->world.comm,
                           .dispatch = job->parallel_dispatch == MR_DISPATCH_LOW_LATENCY
                                           ? MR_EP_LOW_LATENCY
                                           : MR_EP_HIGH_THROUGHPUT,
                           .ll_capacity = (int)job->parallel_ll_capacity,
                           .placement = moe ? &placement : NULL};
    double load_start = mr_engine_clock_seconds();
    rc = mr_model_load(job->model_path, &mo, &s->model, err, sizeof err);
    mr_eplb_placement_free(&placement);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: [model] path: %s\n", err);
        return MR_EXIT_INVALID;
    }
    if (s->world.rank == 0) {
        printf("job %s: model loaded in %.1f s on rank 0\n", job->job_name,
               mr_engine_clock_seconds() - load_start);
        fflush(stdout);
    }
    if ((rc = mr_runner_backend_say(job, s->world.comm, s->model)) != MR_EXIT_OK)
        return rc;
    mr_engine_options eo = {.max_batch_tokens = (int)job->engine_max_batch_tokens,
                            .max_sequences = (int)job->engine_max_sequences,
                            .kv_block_size = (int)job->engine_kv_block_size,
                            .kv_blocks = (int)job->engine_kv_blocks,
                            .kv_type = mr_runner_kv_type(job)};
    if ((rc = engine_widths(s, &eo)) != MR_EXIT_OK)
        return rc;
    rc = mr_engine_create(s->model, &eo, &s->engine, err, sizeof err);
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: %s\n", err);
        return rc == MR_ENGINE_EINVAL ? MR_EXIT_INVALID : MR_EXIT_FAILED;
    }
    if (eo.kv_blocks == 0 && s->world.rank == 0) {
        int blocks = mr_engine_kv_blocks(s->engine);
        printf("job %s: KV pool of rank 0: %d blocks of %d tokens (%.0f MiB), sized to the "
               "memory left (kv_blocks = 0)\n",
               job->job_name, blocks, eo.kv_block_size,
               (double)mr_model_kv_bytes(mr_model_config_get(s->model), eo.kv_type,
                                         eo.kv_block_size, blocks) / 1048576.0);
        fflush(stdout);
    }
    if ((rc = mr_runner_balancer_new(job, s->model, s->engine, s->world.comm, resume,
                                     &s->balancer)) != MR_EXIT_OK ||
        (rc = mr_runner_meter_new(job, s->plan, s->state, s->model, s->engine, s->balancer,
                                  s->world.comm, &s->meter)) != MR_EXIT_OK)
        return rc;
    s->done_cap = (size_t)eo.max_sequences;
    s->done = calloc(s->done_cap, sizeof *s->done);
    s->slots = calloc(s->done_cap, sizeof *s->slots);
    s->lines = calloc(s->done_cap, sizeof *s->lines);
    s->states = calloc((size_t)s->world.size, sizeof *s->states);
    return s->done && s->slots && s->lines && s->states ? MR_EXIT_OK : MR_EXIT_FAILED;
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

/* The part files this rank has open, durable, then the checkpoint. */
static int checkpoint(server *s)
{
    int rc = MR_EXIT_OK;
    for (size_t i = 0; rc == MR_EXIT_OK && i < s->n_parts; i++)
        if ((rc = mr_runner_parts_sync(s->parts[i].results)) == MR_EXIT_OK)
            rc = mr_runner_parts_sync(s->parts[i].errors);
    /* Joined even after a failed sync: the others are waiting in it. */
    int joined = mr_runner_commit_checkpoint(s->commit, s->balancer, s->engine);
    return rc == MR_EXIT_OK ? joined : rc;
}

static int sample(server *s, bool final)
{
    mr_runner_progress mine = {s->n_ok, s->n_failed, s->prompt_tokens, s->completion_tokens};
    return mr_runner_meter_sample(s->meter, &mine, final);
}

static int stopped(server *s, int sig)
{
    mr_runner_signals_durable();
    if (s->world.rank == 0) {
        double since = mr_runner_stop_seconds();
        printf("job %s: stopped by %s: progress committed in checkpoint generation %" PRIu64,
               s->job->job_name, mr_runner_signal_name(sig), s->state->generation);
        if (mr_runner_stop_signal())
            printf(", %.2f s after the signal", since);
        printf("; `moerun resume %s` goes on\n", s->job->job_run_dir);
        fflush(stdout);
    }
    return MR_EXIT_STOPPED;
}

/* Claim, feed, step, until the world agrees there is nothing left or to
 * stop; checkpoint when rank 0 says one is due. */
static int serve_loop(server *s)
{
    int rc = MR_EXIT_OK, stop = 0;
    for (;;) {
        bool done = false, due = false, meter = false;
        if ((rc = feed(s)) != MR_EXIT_OK ||
            (rc = claim_shards(s, &done, &due, &meter, &stop)) != MR_EXIT_OK || done)
            break;
        /* Every rank got through the gather: progress.  The first one is
         * when all have loaded the model, so the watch starts there. */
        mr_runner_watchdog_step(s->watchdog);
        if (stop)
            mr_runner_commit_stopping(s->commit, mr_runner_stop_by_user(stop));
        if ((due || stop) && (rc = checkpoint(s)) != MR_EXIT_OK)
            break;
        if ((meter || stop) && (rc = sample(s, stop != 0)) != MR_EXIT_OK)
            break;
        if (stop)
            return stopped(s, stop);
        if ((rc = step(s)) != MR_EXIT_OK)
            break;
        mr_runner_watchdog_step(s->watchdog);
        mr_runner_commit_first_step(s->commit);
    }
    while (s->n_parts > 0)
        if (close_part(s, &s->parts[0]) != MR_EXIT_OK)
            rc = MR_EXIT_FAILED;
    return rc;
}

/* Rank 0: the attempt's line, from the meters' final sample; the report
 * after it covers the whole job. */
static void summarise(const server *s, double seconds)
{
    const mr_job *job = s->job;
    mr_runner_progress sum;
    mr_runner_meter_totals(s->meter, &sum);
    uint64_t tokens = sum.prompt_tokens + sum.completion_tokens;
    printf("served %" PRIu64 " request%s, %" PRIu64 " failed; %" PRIu64 " prompt + %" PRIu64
           " completion tokens in %.1f s (%.0f tokens/s) on %d rank%s\n",
           sum.ok, sum.ok == 1 ? "" : "s", sum.failed, sum.prompt_tokens, sum.completion_tokens,
           seconds, seconds > 0 ? tokens / seconds : 0.0, s->world.size,
           s->world.size == 1 ? "" : "s");
    printf("results: %s/%s\nerrors:  %s/%s\n", job->job_run_dir, MR_RUN_RESULTS,
           job->job_run_dir, MR_RUN_ERRORS);
}

/* The others wait here while rank 0 joins and reports: waiting in the
 * communicator notices a rank that dies, waiting in MPI_Finalize does
 * not.  Every rank leaves with rank 0's verdict. */
static int leave_together(server *s, int verdict)
{
    char err[512];
    int32_t mine = verdict, *all = calloc((size_t)s->world.size, sizeof *all);
    snprintf(err, sizeof err, "out of memory");
    int rc = all ? mr_comm_ctrl_allgather(s->world.comm, &mine, sizeof mine, all, err, sizeof err)
                 : MR_ENGINE_ENOMEM;
    verdict = all ? all[0] : verdict;
    free(all);
    if (rc == MR_ENGINE_OK)
        return verdict;
    fprintf(stderr, "moerun run: rank %d: %s\n", s->world.rank, err);
    return MR_EXIT_FAILED;
}

/* Rank 0, every record written: more failed requests than [job]
 * max_error_ratio allows (by default: every one failed) fails the job. */
static int judge_failures(const server *s)
{
    const mr_checkpoint_counters *k = &s->state->counters;
    uint64_t total = k->requests_ok + k->requests_failed;
    double ratio = s->job->job_max_error_ratio, share = total ? (double)k->requests_failed /
                                                                    (double)total
                                                              : 0;
    bool failed = ratio >= 1 ? total > 0 && k->requests_ok == 0 : share > ratio;
    if (!failed)
        return MR_EXIT_OK;
    fprintf(stderr, "moerun run: %" PRIu64 " of %" PRIu64 " requests failed (%.1f%%), more than "
                    "[job] max_error_ratio = %g allows; every record is in %s/%s\n",
            k->requests_failed, total, 100 * share, ratio, s->job->job_run_dir, MR_RUN_ERRORS);
    return MR_EXIT_REQUESTS_FAILED;
}

/* Every rank's parts are closed and the last checkpoint has every shard
 * done before the first rank joins them; the report then reads the
 * joined files. */
static int finish(server *s, double started)
{
    int rc = mr_runner_commit_checkpoint(s->commit, s->balancer, s->engine);
    if (rc == MR_EXIT_OK)
        rc = mr_runner_balancer_finish(s->balancer);
    if (rc == MR_EXIT_OK)
        rc = sample(s, true);
    if (rc == MR_EXIT_OK && s->world.rank == 0)
        rc = mr_runner_parts_join(s->job, s->plan, s->state);
    if (rc == MR_EXIT_OK && s->world.rank == 0) {
        summarise(s, now() - started);
        mr_runner_commit_report(s->commit, now() - started);
        rc = mr_runner_report_write(s->job->job_run_dir, stdout, false);
    }
    if (rc == MR_EXIT_OK && s->world.rank == 0)
        rc = judge_failures(s);
    return rc == MR_EXIT_OK || rc == MR_EXIT_REQUESTS_FAILED ? leave_together(s, rc) : rc;
}

int mr_runner_serve(const mr_job *job, const mr_plan *plan, bool mpi,
                    mr_checkpoint_state *state)
{
    server s = {.job = job, .plan = plan, .model_name = model_name(job->model_path),
                .state = state, .created = state->created, .world = {.mpi = mpi}};
    double start = now();
    int rc = load_engine(&s);
    s.parser = rc == MR_EXIT_OK ? mr_request_parser_new(job) : NULL;
    if (rc == MR_EXIT_OK && !s.parser)
        rc = MR_EXIT_FAILED;
    if (rc == MR_EXIT_OK)
        rc = serve_loop(&s);
    /* Rank 0 alone joins the parts while the others wait: no steps to watch. */
    if (s.watchdog)
        mr_runner_watchdog_pause(s.watchdog);
    if (rc == MR_EXIT_OK)
        rc = finish(&s, start);
    for (size_t i = 0; s.lines && i < s.done_cap; i++)
        mr_runner_line_free(&s.lines[i]);
    if (s.reader)
        mr_line_reader_close(s.reader);
    for (size_t i = 0; i < s.n_parts; i++) {
        fclose(s.parts[i].results);
        fclose(s.parts[i].errors);
    }
    free(s.parts);
    free(s.slots);
    free(s.lines);
    free(s.done);
    free(s.states);
    mr_request_parser_free(s.parser);
    mr_runner_meter_free(s.meter);
    mr_runner_balancer_free(s.balancer);
    mr_runner_commit_free(s.commit);
    mr_runner_watchdog_stop(s.watchdog);
    mr_engine_free(s.engine);
    mr_model_free(s.model);
    mr_comm_free(s.world.comm);
    return rc;
}
