/*
 * jobs -- what a moerun job is made of: the job file, the request lines it
 * reads, the result and error lines it writes, and the shard plan that
 * spreads the input over ranks.
 *
 * Nothing here knows about models, MPI or GPUs.  Every function that can
 * fail returns an mr_jobs_status and, on failure, writes a one-line message
 * (naming the file, line or key at fault) into the caller's buffer.
 */
#ifndef MR_JOBS_H
#define MR_JOBS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    MR_JOBS_OK = 0,
    MR_JOBS_EINVAL = -1, /* the user's input is wrong: the message says where */
    MR_JOBS_EIO = -2,    /* the system failed us: a read, write or open */
    MR_JOBS_ENOMEM = -3
} mr_jobs_status;

/* Growable byte buffer; output functions append to it. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} mr_buf;

int mr_buf_reserve(mr_buf *b, size_t extra);
int mr_buf_append(mr_buf *b, const void *data, size_t len);
/* Appends formatted text (NUL-terminated, like mr_buf_append). */
int mr_buf_printf(mr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mr_buf_vprintf(mr_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void mr_buf_free(mr_buf *b);

/* ------------------------------------------------------------------------
 * Job file
 * ------------------------------------------------------------------------
 * Every job key is one line of MR_JOB_KEYS.  Adding a key is adding a line:
 * the struct field (section_key), the parser, the default, the range check,
 * `moerun help keys` and the documentation test all follow from it.
 *
 * X(section, key, type, default, flags, min, max, choices, help)
 *   type     STR, PATH (resolved against the job file's folder), PATHS
 *            (whitespace- or comma-separated paths and globs), INT, FLOAT,
 *            ENUM (one of `choices`, stored as its index), STRINGS (a JSON
 *            string or array of strings)
 *   default  text parsed exactly as a value in the file would be; NULL = none
 *   flags    MR_KEY_REQUIRED, MR_KEY_RESUME or 0
 *   min,max  inclusive range for INT and FLOAT
 */
#define MR_JOB_KEYS(X)                                                                     \
    X(job, name, STR, NULL, 0, 0, 0, NULL,                                                 \
      "job name, used in result ids and the report; default: the job file's name")         \
    X(job, run_dir, PATH, NULL, MR_KEY_RESUME, 0, 0, NULL,                                 \
      "folder for results, errors, plan and checkpoints; default: runs/<name>")            \
    X(job, max_error_ratio, FLOAT, "1", MR_KEY_RESUME, 0, 1, NULL,                         \
      "share of failed requests above which the job exits 7; 1 = only when all failed")    \
    X(model, path, PATH, NULL, MR_KEY_REQUIRED, 0, 0, NULL,                                \
      "model folder in the Hugging Face layout (config.json, *.safetensors)")              \
    X(engine, backend, ENUM, "auto", 0, 0, 0, "auto,cpu,cuda,exact,fenced,ref",            \
      "compute backend: auto (cuda when built in and a GPU is usable, else cpu), cpu "     \
      "(AVX-512 or AVX2, threads), cuda (a GPU, exact mode: cpu's bits; the job is "       \
      "refused without one), exact (cpu's bits in plain loops, for checking), fenced "     \
      "(cpu arithmetic on memory the host cannot touch outside ops; for testing the GPU "  \
      "boundary) or ref (plain loops in double, for checking)")                            \
    X(engine, kv_dtype, ENUM, "f32", 0, 0, 0, "f32,bf16",                                  \
      "KV cache elements: f32, or bf16 (half the memory; K and V rounded to bf16, so "     \
      "results can differ from f32's, the same on every backend, batch and rank count)")   \
    X(engine, threads, INT, "0", MR_KEY_RESUME, 0, 4096, NULL,                             \
      "compute threads per rank; 0 = all cores")                                           \
    X(engine, max_batch_tokens, INT, "0", 0, 0, 1 << 20, NULL,                             \
      "tokens (prompt chunks + decodes) in one forward step; 0 = sized to the memory "     \
      "left beside the weights and KV pool, 8192 at most")                                 \
    X(engine, max_sequences, INT, "0", 0, 0, 1 << 16, NULL,                                \
      "sequences decoding at once; at most max_batch_tokens; 0 = sized as "                \
      "max_batch_tokens is, 256 at most")                                                  \
    X(engine, kv_block_size, INT, "16", 0, 1, 4096, NULL, "tokens per KV cache block")     \
    X(engine, kv_blocks, INT, "4096", 0, 0, 1 << 24, NULL,                                 \
      "KV cache blocks per rank; a sequence reserves its blocks when admitted; 0 = as "    \
      "many as fit in 90% of the memory left (a GPU's, or the host's share)")              \
    X(input, files, PATHS, NULL, MR_KEY_REQUIRED, 0, 0, NULL,                              \
      "request files: paths or globs, .jsonl plain or .gz/.zst/.xz compressed")            \
    X(input, format, ENUM, "openai-batch", 0, 0, 0, "openai-batch,prompt",                 \
      "request line format")                                                               \
    X(input, max_prompt_tokens, INT, "32768", 0, 1, 1 << 24, NULL,                         \
      "longer prompts become error records")                                               \
    X(input, max_line_bytes, INT, "67108864", 0, 64, 1LL << 31, NULL,                      \
      "longer request lines become error records")                                         \
    X(input, shards, INT, "0", 0, 0, 1 << 20, NULL,                                        \
      "number of shards; 0 = auto (4 per rank, at most 256 MiB each)")                     \
    X(generation, max_tokens, INT, "256", 0, 1, 1 << 24, NULL,                             \
      "default completion length when a request gives none")                               \
    X(generation, temperature, FLOAT, "1.0", 0, 0, 100, NULL,                              \
      "default sampling temperature; 0 = greedy")                                          \
    X(generation, top_p, FLOAT, "1.0", 0, 0, 1, NULL, "default nucleus sampling mass")     \
    X(generation, top_k, INT, "0", 0, 0, 1 << 24, NULL, "default top-k; 0 = off")          \
    X(generation, seed, INT, "0", 0, 0, INT64_MAX, NULL,                                   \
      "job seed; each request's sampler is seeded from it and the request's custom_id")    \
    X(generation, stop, STRINGS, "[]", 0, 0, 0, NULL,                                      \
      "default stop strings: a JSON string or array of strings")                           \
    X(parallel, ranks, INT, "1", MR_KEY_RESUME, 1, 1 << 16, NULL,                          \
      "number of ranks (one per GPU)")                                                     \
    X(parallel, ranks_per_node, INT, "0", MR_KEY_RESUME, 0, 1 << 10, NULL,                 \
      "ranks on one host; 0 = all ranks of a local run, or as MPI places them")            \
    X(parallel, launcher, ENUM, "local", MR_KEY_RESUME, 0, 0, "local,mpi",                 \
      "local: moerun starts the ranks; mpi: started by mpirun or srun")                    \
    X(parallel, dispatch, ENUM, "high-throughput", MR_KEY_RESUME, 0, 0,                    \
      "high-throughput,low-latency",                                                       \
      "token exchange: counts first, then exact payloads; or one exchange of fixed size")  \
    X(parallel, ll_capacity, INT, "128", MR_KEY_RESUME, 1, 1 << 20, NULL,                  \
      "low-latency: tokens one rank sends each expert slot of another in the one exchange;"\
      " more go in a second")                                                              \
    X(parallel, transport, ENUM, "auto", MR_KEY_RESUME, 0, 0, "auto,mpi",                  \
      "auto: shared memory between ranks on one host, MPI between hosts; mpi: MPI for all")\
    X(parallel, stall_seconds, FLOAT, "300", MR_KEY_RESUME, 1, 86400, NULL,                \
      "a step in which no rank makes progress for this long is a stall: the job stops")   \
    X(parallel, start_seconds, FLOAT, "180", MR_KEY_RESUME, 1, 86400, NULL,                \
      "every rank must have joined the job within this many seconds of launch")           \
    X(eplb, mode, ENUM, "static+online", MR_KEY_RESUME, 0, 0,                              \
      "off,static,online,static+online",                                                   \
      "expert-parallel load balancing")                                                    \
    X(eplb, step_interval, INT, "100", MR_KEY_RESUME, 1, 1 << 30, NULL,                    \
      "steps between online rebalances")                                                   \
    X(eplb, window_steps, INT, "200", MR_KEY_RESUME, 1, 1 << 20, NULL,                     \
      "steps of expert load the online solver looks back on")                              \
    X(eplb, min_batch_tokens, INT, "64", MR_KEY_RESUME, 0, 1 << 30, NULL,                  \
      "rebalance only when recent steps carried this many tokens per rank")                \
    X(eplb, redundant_experts, INT, "0", MR_KEY_RESUME, 0, 1 << 16, NULL,                  \
      "extra physical expert slots for replicas of hot experts")                           \
    X(eplb, strategy, ENUM, "auto", MR_KEY_RESUME, 0, 0,                                   \
      "auto,global,hierarchical,deepseek",                                                 \
      "placement solver (docs/eplb.md)")                                                   \
    X(eplb, max_moves_percent, FLOAT, "10", MR_KEY_RESUME, 0, 100, NULL,                   \
      "online: at most this share of all expert slots takes a new expert per rebalance")   \
    X(eplb, calibration, PATH, NULL, MR_KEY_RESUME, 0, 0, NULL,                            \
      "expert load trace for the static placement (docs/eplb.md); none = contiguous")      \
    X(checkpoint, interval_seconds, FLOAT, "60", MR_KEY_RESUME, 0.1, 86400, NULL,          \
      "seconds between checkpoints")                                                       \
    X(checkpoint, keep, INT, "3", MR_KEY_RESUME, 1, 1000, NULL,                            \
      "checkpoint generations kept")                                                       \
    X(checkpoint, grace_seconds, INT, "20", MR_KEY_RESUME, 1, 3600, NULL,                  \
      "after SIGTERM, SIGINT or SIGUSR1: seconds to finish the step, commit and stop")     \
    X(cost, gpu_hour_usd, FLOAT, "0", MR_KEY_RESUME, 0, 1e6, NULL,                         \
      "on-demand price of one GPU hour")                                                   \
    X(cost, spot_gpu_hour_usd, FLOAT, "0", MR_KEY_RESUME, 0, 1e6, NULL,                    \
      "spot price of one GPU hour")                                                       \
    X(cost, input_usd_per_million, FLOAT, "0", MR_KEY_RESUME, 0, 1e6, NULL,                \
      "a provider's list price per million input tokens; with the output price the "     \
      "report splits moerun's cost between input and output in their ratio")              \
    X(cost, output_usd_per_million, FLOAT, "0", MR_KEY_RESUME, 0, 1e6, NULL,               \
      "a provider's list price per million output tokens; set with the input price")     \
    X(report, progress_seconds, FLOAT, "10", MR_KEY_RESUME, 0.1, 86400, NULL,              \
      "seconds between progress log lines, metrics.prom refreshes and timeline samples")    \
    X(report, expert_metrics, ENUM, "off", MR_KEY_RESUME, 0, 0, "off,on",                  \
      "metrics.prom series per (layer, expert): off keeps each layer's 3 busiest experts "  \
      "(a real model has 10,000 and more expert series)")

#define MR_KEY_REQUIRED 1
/* The key may differ when a run resumes: it changes how the job runs, never
 * what it writes, so it is left out of the checkpoint's fingerprint. */
#define MR_KEY_RESUME 2

/* The orders below are the orders of the `choices` lists above. */
typedef enum { MR_KV_F32, MR_KV_BF16 } mr_kv_dtype;
typedef enum { MR_EXPERT_METRICS_OFF, MR_EXPERT_METRICS_ON } mr_expert_metrics;
typedef enum {
    MR_BACKEND_AUTO,
    MR_BACKEND_CPU,
    MR_BACKEND_CUDA,
    MR_BACKEND_EXACT,
    MR_BACKEND_FENCED,
    MR_BACKEND_REF
} mr_backend_kind;
typedef enum { MR_FORMAT_OPENAI_BATCH, MR_FORMAT_PROMPT } mr_input_format;
typedef enum { MR_LAUNCHER_LOCAL, MR_LAUNCHER_MPI } mr_launcher;
typedef enum { MR_DISPATCH_HIGH_THROUGHPUT, MR_DISPATCH_LOW_LATENCY } mr_dispatch_kind;
typedef enum { MR_TRANSPORT_AUTO, MR_TRANSPORT_MPI } mr_transport_kind;
typedef enum {
    MR_EPLB_MODE_OFF,
    MR_EPLB_MODE_STATIC,
    MR_EPLB_MODE_ONLINE,
    MR_EPLB_MODE_STATIC_ONLINE
} mr_eplb_mode;
typedef enum {
    MR_EPLB_STRATEGY_AUTO,
    MR_EPLB_STRATEGY_GLOBAL,
    MR_EPLB_STRATEGY_HIERARCHICAL,
    MR_EPLB_STRATEGY_DEEPSEEK
} mr_eplb_strategy;

typedef struct {
    char **items;
    size_t count;
} mr_strlist;

typedef char *mr_job_type_STR;
typedef char *mr_job_type_PATH;
typedef mr_strlist mr_job_type_PATHS;
typedef int64_t mr_job_type_INT;
typedef double mr_job_type_FLOAT;
typedef int mr_job_type_ENUM;
typedef mr_strlist mr_job_type_STRINGS;

typedef struct mr_job {
    char *source; /* the job file as given */
    char *dir;    /* its folder: relative paths in the job are resolved here */
#define MR_JOB_FIELD(sec, key, type, ...) mr_job_type_##type sec##_##key;
    MR_JOB_KEYS(MR_JOB_FIELD)
#undef MR_JOB_FIELD
} mr_job;

/* One `--set section.key=value` from the command line. */
typedef struct {
    const char *assignment;
} mr_job_override;

/*
 * Read a job file, apply the overrides, fill defaults, check every value,
 * expand input globs.  All problems found are reported, one per line, in
 * err ("job.ini:12: unknown key 'step_intervall' in [eplb]; did you mean
 * 'step_interval'?").  On failure *job is left empty.
 */
int mr_job_load(mr_job *job, const char *path, const mr_job_override *overrides,
                size_t n_overrides, char *err, size_t errlen);
void mr_job_free(mr_job *job);

/* The job after defaults and overrides, as INI text (for RUN_DIR/job.ini
 * and `moerun validate --print`). */
int mr_job_format(const mr_job *job, mr_buf *out);
/* The same without the MR_KEY_RESUME keys: what a resumed run must share
 * with the run it continues (the checkpoint's fingerprint). */
int mr_job_format_fingerprint(const mr_job *job, mr_buf *out);

/* The key table, for `moerun help keys` and the documentation test. */
typedef struct {
    const char *section, *key, *type, *default_value, *choices, *help;
    int flags;
    double min, max;
} mr_job_key_info;
const mr_job_key_info *mr_job_keys(size_t *count);

/* The valid name nearest to `name` among `candidates`, or NULL when none is
 * close enough to be a plausible typo. */
const char *mr_suggest(const char *name, const char *const *candidates, size_t n);

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */
typedef enum { MR_ENDPOINT_COMPLETIONS, MR_ENDPOINT_CHAT } mr_endpoint;

typedef struct {
    const char *role;
    const char *content;
} mr_chat_message;

/* Sampling settings after the request's own values override the job's. */
typedef struct {
    int64_t max_tokens;
    double temperature;
    double top_p;
    int64_t top_k;
    uint64_t seed;
    mr_strlist stop;
    double presence_penalty, frequency_penalty;
} mr_sampling;

/* One prompt of a completions request: text, or token ids (`ids`
 * non-NULL, n_ids of them, checked against the vocabulary by the engine). */
typedef struct {
    const char *text;
    const int32_t *ids;
    size_t n_ids;
} mr_prompt;

/* The most prompts one request may list, and choices it may ask for. */
#define MR_MAX_PROMPTS 128
#define MR_MAX_CHOICES 128

/* A parsed request.  Its strings live in the parser that made it and stay
 * valid until that parser's next call. */
typedef struct {
    const char *custom_id;
    mr_endpoint endpoint;
    const char *model; /* NULL when the request names none */
    mr_prompt *prompts; /* completions and the prompt format: one or a list */
    size_t n_prompts;
    mr_chat_message *messages; /* chat */
    size_t n_messages;
    /* The chat's chat_template_kwargs, as JSON object text; NULL when none. */
    const char *chat_template_kwargs;
    mr_sampling sampling;
    /* Choices per prompt (n); the result's choice k is prompt k / n. */
    int64_t n;
    /* Log-probabilities of the completion tokens, with top_logprobs
     * alternatives each (chat: logprobs + top_logprobs; completions:
     * logprobs N); echo puts the prompt before a completion's text, and its
     * tokens' log-probabilities before the completion's. */
    bool logprobs, echo;
    int top_logprobs;
    uint32_t file_index;
    uint64_t line_no;
} mr_request;

/* Why a request line cannot be served.  `code` is one of the documented
 * short codes (docs/formats.md); `message` says what and where. */
typedef struct {
    char code[32];
    char message[512];
    const char *custom_id; /* when it could be read, else NULL; lives in the parser */
} mr_request_error;

typedef struct mr_request_parser mr_request_parser;

mr_request_parser *mr_request_parser_new(const mr_job *job);
void mr_request_parser_free(mr_request_parser *p);

/*
 * Parse one line (no newline; a trailing CR is ignored).  Returns MR_JOBS_OK
 * and fills *req, or MR_JOBS_EINVAL and fills *error.  `file` is used in
 * messages only.
 */
int mr_request_parse(mr_request_parser *p, const char *line, size_t len, const char *file,
                     uint32_t file_index, uint64_t line_no, mr_request *req,
                     mr_request_error *error);

/* The seed of the request's choice `choice`: its own seed for choice 0 (so
 * that n = 1 samples what it always did), then one derived from that and
 * the choice's index, so that every choice has a reproducible stream. */
uint64_t mr_request_choice_seed(const mr_request *req, uint32_t choice);

/* Fill *error for a prompt the tokenizer measured above the job's limit. */
void mr_request_error_prompt_too_long(mr_request_error *error, const mr_request *req,
                                      const char *file, int64_t n_tokens, int64_t limit);
/* Fill *error for a line whose custom_id appeared first at first_file:first_line. */
void mr_request_error_duplicate(mr_request_error *error, const char *custom_id,
                                const char *file, uint64_t line_no, const char *first_file,
                                uint64_t first_line);
/* Fill *error for a line longer than the job's max_line_bytes. */
void mr_request_error_line_too_long(mr_request_error *error, const char *file,
                                   uint64_t line_no, uint64_t len, uint64_t limit);

/* ------------------------------------------------------------------------
 * Results and errors (OpenAI Batch output format, docs/formats.md)
 * ------------------------------------------------------------------------ */
/* A token in a result's log-probabilities: the bytes it stands for (not
 * NUL-terminated) and its log-probability. */
typedef struct {
    const char *bytes;
    size_t len;
    float logprob;
} mr_result_token;

/* One choice of a result.  The usage sums every choice's token counts, so
 * a prompt shared by n choices is counted on one of them only. */
typedef struct {
    const char *text; /* echo included */
    size_t text_len;
    const char *finish_reason; /* "stop" or "length" */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    /* When the request asked for log-probabilities: n_tokens tokens, the
     * first n_unscored of which have none (echo: the prompt's first), and
     * n_top alternatives each, most likely first ([n_tokens][n_top]). */
    const mr_result_token *tokens, *top;
    size_t n_tokens, n_unscored;
    int n_top;
} mr_completion;

/* Append one result line (with its newline), its choices in order.
 * `created` is the job's start time, fixed per job so that reruns write
 * identical bytes. */
int mr_result_format(mr_buf *out, const char *job_name, const char *model_name,
                     const mr_request *req, const mr_completion *choices, size_t n_choices,
                     int64_t created);

/* Append one error line for input line `line_no` of `file`. */
int mr_error_format(mr_buf *out, const char *job_name, const char *file, uint64_t line_no,
                    const mr_request_error *error);

/* ------------------------------------------------------------------------
 * Input files and lines
 * ------------------------------------------------------------------------
 * Compressed inputs are recognised by content (libarchive), not by name.
 * Offsets are always in decompressed bytes.
 */
typedef struct {
    const char *data; /* not NUL-terminated; valid until the next call */
    size_t len;       /* without the newline or a CR before it */
    uint64_t line_no; /* 1-based within the file */
    uint64_t offset;  /* of the line's first byte */
    bool too_long;    /* longer than the reader's limit: data is empty */
} mr_line;

typedef struct mr_line_reader mr_line_reader;

/* Read the lines that start in [begin, end) of `path`; first_line is the
 * number of the line that starts at `begin`. */
int mr_line_reader_open(mr_line_reader **reader, const char *path, uint64_t begin,
                        uint64_t end, uint64_t first_line, size_t max_line_bytes, char *err,
                        size_t errlen);
/* 1 and a line, 0 at the end of the range, or an mr_jobs_status. */
int mr_line_reader_next(mr_line_reader *reader, mr_line *line, char *err, size_t errlen);
void mr_line_reader_close(mr_line_reader *reader);

/* A line of only blanks (spaces, tabs, a CR) is no request and no error:
 * readers skip it. */
bool mr_line_is_blank(const char *s, size_t len);

/* ------------------------------------------------------------------------
 * Shard plan
 * ------------------------------------------------------------------------
 * Shards split the inputs at line boundaries into pieces of about equal
 * size.  A shard never spans two files.  The plan is a pure function of the
 * input bytes and the shard count, so a resumed run finds the same shards.
 */
typedef struct {
    uint32_t id;         /* index in the plan; stable for a given plan */
    uint32_t file_index; /* into mr_plan.files */
    uint64_t begin, end; /* decompressed byte range, lines starting inside */
    uint64_t first_line; /* line number of the line at `begin` */
    uint64_t n_lines;
} mr_shard;

typedef struct {
    char *path;
    bool compressed;
    uint64_t bytes; /* decompressed */
    uint64_t lines;
} mr_plan_file;

/* A line whose custom_id repeats one seen earlier in input order: it gets
 * an error record; the earlier line is served. */
typedef struct {
    uint32_t file_index;
    uint64_t line_no;
    uint64_t first_file_index, first_line_no;
} mr_duplicate;

typedef struct {
    mr_plan_file *files;
    size_t n_files;
    mr_shard *shards;
    size_t n_shards;
    mr_duplicate *duplicates; /* in input order */
    size_t n_duplicates;
    uint64_t n_lines;    /* all lines, blank ones included */
    uint64_t n_requests; /* lines that parse as requests (duplicates excluded) */
    uint64_t n_invalid;  /* lines that will become error records */
} mr_plan;

/* Scan every input once (decompressing where needed), check each line as a
 * request, find duplicate ids and cut shards.  `n_shards` 0 means auto. */
int mr_plan_build(mr_plan *plan, const mr_job *job, size_t n_shards, char *err,
                  size_t errlen);
/* The plan as JSON (plan.json in the run folder), and back. */
int mr_plan_format(const mr_plan *plan, mr_buf *out);
int mr_plan_parse(mr_plan *plan, const char *json, size_t len, char *err, size_t errlen);
void mr_plan_free(mr_plan *plan);

#endif
