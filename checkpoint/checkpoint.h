/*
 * checkpoint -- durable run state: what a resumed run needs to go on where
 * the last one stopped (docs/checkpoint-format.md).
 *
 * A checkpoint holds the job's fingerprint (to refuse resuming a changed
 * job), every shard's committed progress, the expert placement and load
 * window, and the counters the report sums.  Generations are written
 * atomically, checksummed and zstd-compressed; a damaged newest generation
 * falls back to the previous good one with a warning.  A run folder moves
 * between clusters as a .tar.zst bundle.
 *
 * Nothing here knows about models, MPI or the job file's keys: the runner
 * fills the state from its own types.  Every function that can fail returns
 * an mr_checkpoint_status and writes a one-line message into err.
 */
#ifndef MR_CHECKPOINT_H
#define MR_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    MR_CHECKPOINT_OK = 0,
    MR_CHECKPOINT_EINVAL = -1,   /* bad input, a damaged checkpoint, a refused bundle */
    MR_CHECKPOINT_EIO = -2,      /* the system failed us: open, write, fsync, rename */
    MR_CHECKPOINT_ENOMEM = -3,
    MR_CHECKPOINT_ENOENT = -4,   /* no checkpoint yet: a fresh run */
    MR_CHECKPOINT_EVERSION = -5, /* written by a moerun with another format version */
    MR_CHECKPOINT_ENOSPC = -6    /* a write failed: no space left (or over quota) */
} mr_checkpoint_status;

/* The format version this moerun writes and reads.  2: records committed
 * in any order with the tokens of lines in flight, and inputs fingerprinted
 * by their whole content, per shard (docs/checkpoint-format.md). */
#define MR_CHECKPOINT_VERSION 2
/* The run folder's subfolder that holds the generations. */
#define MR_CHECKPOINT_DIR "checkpoint"

/* ------------------------------------------------------------------------
 * Fingerprint: what the results depend on, to tell whether a resume serves
 * the same job
 *
 * Inputs are hashed whole with XXH3 (xxHash's 64-bit hash): every byte
 * counts, at several GB/s.  It finds any accidental change; it is not made
 * to resist someone crafting a collision.
 * ------------------------------------------------------------------------ */

/* One shard of an input, as plan.json cut it: its byte range, the lines
 * that start in it (for messages), and the hash of those bytes. */
typedef struct {
    uint32_t id;          /* the shard's id in plan.json */
    uint64_t begin, end;  /* bytes [begin, end) of the file, decompressed */
    uint64_t first_line;  /* 1-based number of the line at begin */
    uint64_t lines;       /* lines that start in the range */
    uint64_t xxh3;        /* XXH3-64 of the range */
} mr_checkpoint_input_shard;

typedef struct {
    char *path;
    bool compressed;      /* the shards' ranges count decompressed bytes */
    uint64_t size;        /* bytes as stored */
    uint64_t xxh3;        /* XXH3-64 of the file as stored */
    mr_checkpoint_input_shard *shards; /* in file order, ranges not overlapping */
    size_t n_shards;
} mr_checkpoint_input;

typedef struct {
    char *job;          /* the job file after defaults and overrides, as INI text */
    char *model_config; /* the model's config.json text */
    mr_checkpoint_input *inputs;
    size_t n_inputs;
    /* False for a fingerprint made without reading the inputs (sizes
     * only): a diff then compares no hashes. */
    bool hashed;
} mr_checkpoint_fingerprint;

/*
 * Copies job and model_config, and of each input its path, `compressed`
 * and its shards' id, range and lines (its other fields are ignored).  With
 * `hash`, reads every input once, start to end, in blocks (never whole),
 * and fills in the size and hashes: the file's as stored, and each shard's
 * of its range (decompressed, through libarchive, when `compressed`).
 * Without, only stats the inputs for their sizes, to refuse a changed job
 * cheaply before the work of a full check.
 */
int mr_checkpoint_fingerprint_make(mr_checkpoint_fingerprint *fp, const char *job,
                                   const char *model_config, const mr_checkpoint_input *inputs,
                                   size_t n_inputs, bool hash, char *err, size_t errlen);
void mr_checkpoint_fingerprint_free(mr_checkpoint_fingerprint *fp);

/* How `now` differs from `then`, one difference a line ("input data/a.jsonl
 * changed size 1234 → 1300", "input data/a.jsonl changed in shard 3 (lines
 * 1201–1800)", "job key [engine] max_batch_tokens changed 256 → 512"), cut
 * to fit `what`.  Returns the number of differences: 0 means the same job. */
size_t mr_checkpoint_fingerprint_diff(const mr_checkpoint_fingerprint *then,
                                      const mr_checkpoint_fingerprint *now, char *what,
                                      size_t whatlen);

/* ------------------------------------------------------------------------
 * Run state
 * ------------------------------------------------------------------------ */

/* A request that was read but had no record yet when the checkpoint was
 * written: a resumed run serves it again, going on from the completion
 * tokens it had generated.  Nothing else of the sampler is needed: a
 * request's random stream is seeded from the request and takes one draw
 * per token, so the token count is its place in the stream. */
typedef struct {
    uint64_t line;   /* its line number in the shard's file */
    uint32_t choice; /* which of the line's generations (n > 1, lists of prompts) */
    int32_t *tokens; /* completion tokens generated so far (malloc'd; NULL when none) */
    size_t n_tokens;
} mr_checkpoint_in_flight;

/* A shard's committed progress.  Records are committed as they finish, in
 * any order: every line before next_line has its result or error record
 * within the offsets of the shard's part files, except the lines in
 * in_flight; no line from next_line on has been read. */
typedef struct {
    uint32_t index;          /* the shard's id in plan.json */
    uint64_t next_line;      /* 1-based line number in its file; 0: nothing read */
    uint64_t results_offset; /* bytes of the results part that are committed */
    uint64_t errors_offset;  /* and of the errors part */
    mr_checkpoint_in_flight *in_flight; /* in line, then choice order (malloc'd; NULL when none) */
    size_t n_in_flight;
    bool done;
} mr_checkpoint_shard;

/* Frees a shard's in_flight list and empties it. */
void mr_checkpoint_in_flight_free(mr_checkpoint_shard *shard);

/* Where routed experts live: eplb's phy2log and its shape.  n_layers 0: none. */
typedef struct {
    int n_layers, n_logical, n_physical, n_ranks;
    int32_t *phy2log; /* [n_layers][n_physical] */
} mr_checkpoint_placement;

/* The online balancer's load window, as its sum: the solver needs no more,
 * and a per-step ring would be window_steps times larger.  n_layers 0: none. */
typedef struct {
    int n_layers, n_experts;
    uint64_t steps; /* steps summed */
    uint64_t *sum;  /* [n_layers][n_experts] tokens per logical expert */
} mr_checkpoint_window;

/* What the report sums over every attempt of the job. */
typedef struct {
    uint64_t requests_ok, requests_failed;
    uint64_t tokens_in, tokens_out;
    double wall_seconds, rank_seconds;
    uint64_t preemptions;           /* resumes after a preemption notice or a crash */
    double preemption_lost_seconds; /* work redone and restarts after preemptions */
    uint64_t attempts;              /* runs of the job: 1 + resumes */
    uint64_t user_stops;            /* resumes after a user's stop (SIGINT, moerun stop) */
    uint64_t stopped_by_user;       /* 1 while the attempt that wrote it ended on one */
} mr_checkpoint_counters;

typedef struct {
    uint64_t generation; /* set by mr_checkpoint_write and the loaders */
    double written;      /* Unix time of that write, in seconds */
    /* The job's start time: results carry it as `created`, so resumed
     * runs write the same bytes. */
    int64_t created;
    mr_checkpoint_fingerprint fingerprint;
    mr_checkpoint_shard *shards; /* indexed by shard id */
    size_t n_shards;
    mr_checkpoint_placement placement;
    mr_checkpoint_window window;
    mr_checkpoint_counters counters;
} mr_checkpoint_state;

/* An empty state with n_shards shards, none started.  The runner then
 * updates shards[i] in place as results are committed: a write serialises
 * the whole state, so progress costs nothing between writes. */
int mr_checkpoint_state_init(mr_checkpoint_state *state, size_t n_shards, char *err,
                             size_t errlen);
void mr_checkpoint_state_free(mr_checkpoint_state *state);

/* Replace the placement or window with a copy of the arrays given. */
int mr_checkpoint_set_placement(mr_checkpoint_state *state, int n_layers, int n_logical,
                                int n_physical, int n_ranks, const int32_t *phy2log,
                                char *err, size_t errlen);
int mr_checkpoint_set_window(mr_checkpoint_state *state, int n_layers, int n_experts,
                             uint64_t steps, const uint64_t *sum, char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Generations in a folder (RUN_DIR/checkpoint)
 * ------------------------------------------------------------------------ */

/* Writes the state as the next generation (one above the highest in `dir`,
 * which is created if missing), durably, then keeps the newest `keep`
 * generations and removes older ones and temporary files left by
 * interrupted writes.  Sets state->generation and state->written. */
int mr_checkpoint_write(const char *dir, mr_checkpoint_state *state, int keep, char *err,
                        size_t errlen);

/*
 * Loads the newest good generation into *state (which the caller frees).
 * When newer generations are damaged, they are skipped and `warning` says
 * which, why, and how much progress will be redone; otherwise it is empty.
 * MR_CHECKPOINT_ENOENT: no generation at all.  MR_CHECKPOINT_EINVAL: every
 * generation is damaged.  MR_CHECKPOINT_EVERSION: one was written in another
 * format version; nothing older is tried, as the run belongs to that moerun.
 */
int mr_checkpoint_load_latest(const char *dir, mr_checkpoint_state *state, char *warning,
                              size_t warnlen, char *err, size_t errlen);

/* One generation, checked: for `moerun status`. */
typedef struct {
    uint64_t generation;
    char name[64];      /* state-000042.ckpt.zst */
    uint64_t bytes;     /* file size */
    double written;     /* from its header, or the file's mtime when that is damaged */
    bool good;
    char problem[160];  /* why it is not good: "checksum mismatch", ... */
} mr_checkpoint_info;

/* Every generation in `dir`, newest first (*list is malloc'd; none: NULL
 * and 0).  Each is read and verified. */
int mr_checkpoint_list(const char *dir, mr_checkpoint_info **list, size_t *n, char *err,
                       size_t errlen);

/* ------------------------------------------------------------------------
 * Bundles: a run folder as one .tar.zst, to move a run to another cluster
 * ------------------------------------------------------------------------ */

/* Every regular file and folder under run_dir (temporary *.tmp files and
 * the bundle itself excepted), written atomically to `bundle`.  A link or
 * special file in run_dir is an error: import would refuse it. */
int mr_checkpoint_export(const char *run_dir, const char *bundle, char *err, size_t errlen);

/* Unpacks `bundle` into target_dir, which must not exist or be empty.  A
 * bundle with an absolute path, a `..` component, a link or a special file
 * is refused, naming the entry, and leaves nothing behind. */
int mr_checkpoint_import(const char *bundle, const char *target_dir, char *err, size_t errlen);

#endif
