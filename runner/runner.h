/*
 * runner -- the moerun command line.  Each command is a function that takes
 * its own argv (argv[0] is the command name) and returns a process exit
 * code; only main() exits.
 */
#ifndef MR_RUNNER_H
#define MR_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "checkpoint/checkpoint.h"
#include "engine/engine.h"
#include "jobs/jobs.h"

/* Exit codes, documented in docs/cli.md. */
enum {
    MR_EXIT_OK = 0,
    MR_EXIT_FAILED = 1,    /* a system error: I/O, memory, a signal */
    MR_EXIT_USAGE = 2,     /* the command line is wrong */
    MR_EXIT_INVALID = 3,   /* the job, an input, the model or the run folder is wrong */
    MR_EXIT_STOPPED = 4,   /* stopped by a signal; the checkpoint resumes it */
    MR_EXIT_RANK_FAILED = 5, /* a rank died, stalled or never joined; --max-restarts retries */
    MR_EXIT_DISK_FULL = 6, /* no space left for a run-folder file; resume once space is freed */
    MR_EXIT_REQUESTS_FAILED = 7 /* finished, but more requests failed than
                                 * [job] max_error_ratio allows */
};

typedef struct {
    const char *name;
    int (*entry)(int argc, char **argv);
    const char *summary;
    const char *usage; /* the whole help text of the command */
} mr_runner_command;

/* The help text of a command, for its --help. */
const char *mr_runner_usage(const char *command);

int mr_runner_run(int argc, char **argv);
int mr_runner_resume(int argc, char **argv);
int mr_runner_checkpoint(int argc, char **argv);
int mr_runner_validate(int argc, char **argv);
int mr_runner_status(int argc, char **argv);
int mr_runner_stop(int argc, char **argv);
int mr_runner_report(int argc, char **argv);
int mr_runner_help(int argc, char **argv);
int mr_runner_make_model(int argc, char **argv);
int mr_runner_tokenize(int argc, char **argv);
int mr_runner_render(int argc, char **argv);
int mr_runner_preflight(int argc, char **argv);
int mr_runner_eplb(int argc, char **argv);

/* The options a command may take, as bits of `allowed`.  The values are the
 * getopt codes; they stay clear of ASCII letters. */
enum {
    MR_OPT_SET = 0x100,
    MR_OPT_PRINT = 0x200,
    MR_OPT_JSON = 0x400,
    MR_OPT_PRESET = 0x800,
    MR_OPT_SEED = 0x1000,
    MR_OPT_DECODE = 0x2000,
    /* Not an option: the command runs without an operand too. */
    MR_ARGS_OPERAND_OPTIONAL = 0x4000,
    MR_OPT_FORCE_NEW = 0x8000,
    MR_OPT_MAX_RESTARTS = 0x10000,
    MR_OPT_DTYPE = 0x20000
};

typedef struct {
    const char *operand; /* the job file or run folder */
    mr_job_override *overrides;
    size_t n_overrides;
    bool print, json, decode, force_new;
    const char *preset, *seed, *max_restarts, *dtype; /* as given; the command checks them */
} mr_runner_args;

/* Parse `COMMAND [options] OPERAND`.  Returns -1 when the command should go
 * on, else the exit code to return (0 after --help, MR_EXIT_USAGE after a
 * message).  args->operand is NULL when an optional operand is left out.
 * Free args with mr_runner_free_args either way. */
int mr_runner_parse_args(int argc, char **argv, unsigned allowed, const char *operand,
                         mr_runner_args *args);
void mr_runner_free_args(mr_runner_args *args);
/* Load the job named by args, printing problems; returns an exit code. */
int mr_runner_load_job(const mr_runner_args *args, mr_job *job);

/* Files in the run folder. */
int mr_runner_mkdir_p(const char *path, char *err, size_t errlen);
int mr_runner_write_atomic(const char *path, const void *data, size_t len, char *err,
                           size_t errlen);
int mr_runner_read_file(const char *path, mr_buf *out, char *err, size_t errlen);
/* fsync of a folder, so the renames in it survive a power cut; -1 and errno. */
int mr_runner_sync_folder(const char *dir);
/* Removes a file or a folder with everything in it (links are removed, not
 * followed); a missing one is fine.  Prints problems; returns an exit code. */
int mr_runner_remove_tree(const char *path);
/* Load RUN_DIR/plan.json, printing problems; returns an exit code. */
int mr_runner_load_plan(const char *dir, mr_plan *plan);
/* Open a run-folder file for reading; *f is NULL when it does not exist.
 * *path (freed by the caller) names it for messages.  Returns an exit code. */
int mr_runner_open_run_file(const char *dir, const char *name, FILE **f, char **path);
/* Count the lines of a run-folder file; a missing file has none. */
int mr_runner_count_lines(const char *dir, const char *name, uint64_t *lines);
/* A write to `path` failed with errno `err`: prints what failed (for a
 * full disk, that it is full and which folder) and returns the exit code,
 * MR_EXIT_DISK_FULL for ENOSPC and EDQUOT, else MR_EXIT_FAILED. */
int mr_runner_write_failed(const char *path, int err);

/* One owner per run folder (runner/lock.c).  `run` and `resume` take the
 * lock before they touch the folder and hold it to the end; the kernel
 * drops it with the process.  Taking it creates the folder; a folder that
 * another process owns is refused with MR_EXIT_INVALID and a message naming
 * the owner.  argv (argc entries from the command name on) is recorded as
 * the owner's command line. */
typedef struct mr_runner_lock mr_runner_lock;
int mr_runner_lock_take(const char *run_dir, int argc, char **argv, mr_runner_lock **out);
void mr_runner_lock_release(mr_runner_lock *lock);
/* Whether a live process owns run_dir; *owner describes it, *pid is its pid
 * when it runs on this host (else 0). */
bool mr_runner_lock_owner(const char *run_dir, int *pid, char *owner, size_t len);

/* The ranks of a job: this one's place in them and the communicator the
 * engine exchanges tokens through.  Without MPI it is a world of one. */
typedef struct {
    bool mpi;
    int rank, size;
    mr_comm *comm;
} mr_runner_world;

/* The Unix time this job's processes started: the launching `moerun run`
 * marks it (main) and hands it to the ranks it starts. */
void mr_runner_mark_start(void);
double mr_runner_start_time(void);
/* The Unix time now, in seconds: for dates and spans across processes. */
double mr_runner_unix_seconds(void);

/* Whether progress goes to a terminal: the launching `moerun run` decides
 * (its stdout), as the ranks' output reaches it through mpirun's pipes. */
bool mr_runner_progress_tty(void);

/* MPI_Init, for every moerun process that joins an MPI world. */
void mr_runner_mpi_init(int *argc, char ***argv);
/* True in a process that mpirun or srun started. */
bool mr_runner_under_mpi(void);
/* launcher = local with several ranks: runs this command line (argv, from
 * the command name on) once per rank under mpirun and waits, passing stop
 * signals on.  Returns mpirun's exit code when it is one of the ranks'
 * (0, MR_EXIT_INVALID, MR_EXIT_STOPPED, MR_EXIT_DISK_FULL,
 * MR_EXIT_REQUESTS_FAILED), MR_EXIT_STOPPED when a stop came before the
 * ranks had joined, else MR_EXIT_RANK_FAILED (a rank died, or they did not
 * all join within [parallel] start_seconds). */
int mr_runner_launch_local(const mr_job *job, int argc, char **argv);
/* launcher = local: whether this host can start [parallel] ranks ranks
 * (memory, mpirun's open files); MR_EXIT_OK, or MR_EXIT_INVALID after a
 * message naming [parallel] ranks and the limit.  With raise_limit the
 * soft open-file limit is raised as far as mpirun needs. */
int mr_runner_local_ranks_check(const mr_job *job, bool raise_limit);
/* In a rank: whether a supervising `moerun run` started it (then that
 * process owns the run folder); and, once every rank has its signal
 * handlers, tell that process the ranks have joined. */
bool mr_runner_supervised(void);
void mr_runner_mark_joined(void);

/* Stall detection (watchdog.c): a thread per rank writes the rank's
 * heartbeat into RUN_DIR/ranks once a second and, when no step has
 * finished for [parallel] stall_seconds, names the ranks whose heartbeat
 * stopped and ends the rank with MR_EXIT_RANK_FAILED.  The watch starts at
 * the first mr_runner_watchdog_step and rests after a pause. */
typedef struct mr_runner_watchdog mr_runner_watchdog;
int mr_runner_watchdog_start(const mr_job *job, int rank, int size, mr_runner_watchdog **out);
void mr_runner_watchdog_step(mr_runner_watchdog *w);
void mr_runner_watchdog_pause(mr_runner_watchdog *w);
void mr_runner_watchdog_stop(mr_runner_watchdog *w);

/* Stop signals (signals.c): SIGTERM and SIGUSR1 (preemption notices),
 * SIGINT and SIGUSR2 (a user's stop).  mr_runner_signals_catch, first thing
 * in `run` and `resume`: the first is noted for the work loop and bounded
 * by an alarm of grace_seconds, a second exits at once with
 * MR_EXIT_STOPPED.  mr_runner_signals_supervise: in the process that waits
 * on mpirun, signals are only noted, for its wait loop to pass on. */
void mr_runner_signals_catch(void);
void mr_runner_signals_grace(int grace_seconds);
void mr_runner_signals_supervise(void);
/* The stop is checkpointed: from now on a signal (mpirun ending the
 * other ranks as the first exits) ends the rank quietly. */
void mr_runner_signals_durable(void);
/* The first stop signal, or 0; and seconds since it came. */
int mr_runner_stop_signal(void);
double mr_runner_stop_seconds(void);
/* Whether `sig` is a user's stop rather than a preemption notice. */
bool mr_runner_stop_by_user(int sig);
/* How many stop signals came (a second one stops at once). */
int mr_runner_stop_count(void);
const char *mr_runner_signal_name(int sig);

/* Resuming (resume.c).  In the process that waits on the ranks: refuse a
 * run folder that holds another job's checkpoint (MR_EXIT_INVALID, with
 * what changed), or with force_new remove the old run's state. */
int mr_runner_resume_check(const mr_job *job, bool force_new);
/* On the planning rank: the same check, then either the plan and the
 * checkpoint of the run to resume, or a fresh plan and state; writes
 * job.ini and a first checkpoint generation of this attempt.  *finished
 * when the run folder holds a finished run.  Returns an exit code. */
int mr_runner_prepare(const mr_job *job, bool force_new, mr_plan *plan,
                      mr_checkpoint_state *state, bool *finished);
/* On the other ranks, after the planning rank: the checkpoint it wrote. */
int mr_runner_load_state(const mr_job *job, mr_checkpoint_state *state);
/* RUN_DIR/checkpoint, in a buffer the caller frees (NULL: out of memory). */
char *mr_runner_checkpoint_dir(const char *run_dir);
/* Makes w->comm with buffers of `capacity` bytes (w->mpi set by the
 * caller); returns an exit code. */
int mr_runner_world_init(mr_runner_world *w, const mr_job *job, size_t capacity);

/* The job's [engine] backend (backend.c): the name mr_backend_create
 * takes for it; with backend = cuda, whether this host can create it
 * (MR_EXIT_INVALID with a message naming the key, the reason and
 * backend = auto in err), asked before anything touches the run folder;
 * and, collective once the model is loaded, rank 0's log lines: the
 * backend the ranks run on and, under auto, why cuda was not taken. */
const char *mr_runner_backend_name(const mr_job *job);
/* The element type of the job's KV cache ([engine] kv_dtype). */
mr_tensor_type mr_runner_kv_type(const mr_job *job);
int mr_runner_backend_check(const mr_job *job, char *err, size_t errlen);
int mr_runner_backend_say(const mr_job *job, mr_comm *comm, const mr_model *model);

/* Serve every request of a planned job into its run folder, this rank's
 * share of it when there are several, going on from the committed progress
 * in `state` (state->created goes into every result line).  Returns an
 * exit code: MR_EXIT_STOPPED after a stop signal, once the progress is
 * checkpointed. */
int mr_runner_serve(const mr_job *job, const mr_plan *plan, bool mpi,
                    mr_checkpoint_state *state);

/* A request line in the engine (choices.c): one generation per prompt and
 * choice, n of each prompt, collected until all have finished, then one
 * result line with the choices in order. */
typedef struct {
    bool used;
    uint32_t shard;
    mr_request req;     /* copied: the strings, prompts' texts and ids */
    uint32_t n_choices; /* prompts x n */
    uint32_t n_left;
    mr_completion_out *done; /* [n_choices], as they finish */
} mr_runner_line;

/* Copies what the result will need from `req` (valid until the parser's
 * next line) into a free line.  Returns an exit code. */
int mr_runner_line_start(mr_runner_line *line, uint32_t shard, const mr_request *req);
void mr_runner_line_free(mr_runner_line *line);
/* Takes a finished generation (its memory); true when it was the last. */
bool mr_runner_line_done(mr_runner_line *line, uint32_t choice, mr_completion_out *out);
/* The result line of a line whose choices have all finished, its echo and
 * log-probabilities spelled with the tokenizer's bytes; the token counts
 * of its usage.  Returns an exit code. */
int mr_runner_line_format(const mr_runner_line *line, const mr_tokenizer *tok,
                          const char *job_name, const char *model_name, int64_t created,
                          mr_buf *out, int64_t *prompt_tokens, int64_t *completion_tokens);

/* EPLB in a running job (balance.c): the job's side of the engine's
 * balancer (engine/balancer.c). */
typedef struct mr_runner_balancer mr_runner_balancer;
/* The balancer's options from [eplb]. */
void mr_runner_balance_options(const mr_job *job, mr_engine_balance_options *out);
/* The placement a job starts with.  A resumed run (`resume` not NULL)
 * takes the checkpoint's placement when it has this shape and rank count,
 * else solves one from the checkpoint's load window.  Otherwise it is
 * solved from [eplb] calibration in a static mode, or contiguous.  Prints
 * problems; returns an exit code. */
int mr_runner_eplb_initial(const mr_job *job, const mr_model_config *cfg, int ranks, int nodes,
                           bool print, const mr_checkpoint_state *resume,
                           mr_eplb_placement *out);
/* A resumed run (`resume` not NULL) starts its window from the
 * checkpoint's and appends to eplb.jsonl, where rank 0 logs every
 * decision. */
int mr_runner_balancer_new(const mr_job *job, mr_model *model, mr_engine *engine, mr_comm *comm,
                           const mr_checkpoint_state *resume, mr_runner_balancer **out);
/* Collective: the placement and the world's load window into rank 0's
 * state, for a checkpoint. */
int mr_runner_balancer_checkpoint(mr_runner_balancer *b, mr_checkpoint_state *state);
void mr_runner_balancer_free(mr_runner_balancer *b);
/* After every engine step, on every rank (collective every step_interval
 * steps in an online mode). */
int mr_runner_balancer_step(mr_runner_balancer *b);
/* At the end, on every rank: the last measurement and expert_load.csv. */
int mr_runner_balancer_finish(mr_runner_balancer *b);
int mr_runner_balancer_rebalances(const mr_runner_balancer *b);

/* The job's meters while it runs (meter.c): every [report]
 * progress_seconds the ranks gather their counts, stage times and expert
 * load; rank 0 appends to timeline.jsonl, rewrites metrics.prom and
 * expert_load.csv and logs a progress line, or keeps a live line on a
 * terminal. */
typedef struct mr_runner_meter mr_runner_meter;
/* What this rank finished in this attempt. */
typedef struct {
    uint64_t ok, failed, prompt_tokens, completion_tokens;
} mr_runner_progress;
int mr_runner_meter_new(const mr_job *job, const mr_plan *plan, const mr_checkpoint_state *state,
                        mr_model *model, mr_engine *engine, const mr_runner_balancer *balancer,
                        mr_comm *comm, mr_runner_meter **out);
void mr_runner_meter_free(mr_runner_meter *m);
/* Rank 0: whether progress_seconds have passed since the last sample. */
bool mr_runner_meter_due(const mr_runner_meter *m);
/* Collective: one sample; `final` at the end of an attempt. */
int mr_runner_meter_sample(mr_runner_meter *m, const mr_runner_progress *mine, bool final);
/* Rank 0: this attempt's world totals at the last sample. */
void mr_runner_meter_totals(const mr_runner_meter *m, mr_runner_progress *out);
/* Rank 0, every step: redraws the live line on a terminal from what this
 * attempt did so far, world-wide: records finished, token rows the
 * engines ran and tokens they generated (mr_engine_stats). */
void mr_runner_meter_live(mr_runner_meter *m, uint64_t done, uint64_t rows, uint64_t generated);
/* A progress line's figures: the live line, the log line, timeline.jsonl
 * and `moerun status` all give these, in mr_runner_progress_format's words. */
typedef struct {
    const char *job;
    uint64_t done, planned; /* records (results and errors) of the whole job */
    double window_seconds;  /* what the rates look back on */
    double tokens_per_second, generated_per_second, requests_per_second;
    double eta_seconds;     /* < 0: unknown */
    double rank_imbalance;  /* 0: not measured yet */
} mr_runner_progress_line;
void mr_runner_progress_format(const mr_runner_progress_line *p, char *out, size_t len);

/* The job report (report.c), from the files in the run folder: writes
 * report.json, report.md and the SVGs there and prints the report to
 * `to` (NULL: nothing), as text or as report.json's JSON.  Returns an
 * exit code. */
int mr_runner_report_write(const char *run_dir, FILE *to, bool json);

/* Per-shard part files under RUN_DIR/parts, joined at the end. */
/* Cuts a shard's part files back to its committed offsets, before it is
 * served (again). */
int mr_runner_parts_cut(const char *run_dir, const mr_checkpoint_shard *shard);
/* Opens them to append. */
int mr_runner_parts_open(const char *run_dir, uint32_t shard, FILE **results, FILE **errors);
/* Appends the record (`len` bytes, its newline included) of input line
 * `line_no` to a part; *bytes is what the part grew by. */
int mr_runner_parts_write(FILE *f, uint64_t line_no, const char *record, size_t len,
                          size_t *bytes);
/* Flushes and fsyncs; close also closes. */
int mr_runner_parts_sync(FILE *f);
int mr_runner_parts_close(FILE *f);
/* Joins the committed records of every shard's parts, in input order,
 * into results.jsonl and errors.jsonl, checking against the inputs that
 * every line but a blank one has exactly one record (MR_EXIT_INVALID,
 * naming the first line that has none or several, and nothing written
 * when not); only then removes the parts. */
int mr_runner_parts_join(const mr_job *job, const mr_plan *plan,
                         const mr_checkpoint_state *state);
/* Whether results.jsonl and errors.jsonl are in place and RUN_DIR/parts
 * is gone: the join is complete, and a run whose shards are all done is
 * finished. */
bool mr_runner_parts_joined(const char *run_dir);

/* Committing progress (commit.c).  Each rank notes the lines it reads and
 * writes per shard; every [checkpoint] interval_seconds (rank 0's clock
 * decides, and tells the others in the per-step gather), at a stop and at
 * the end, the ranks make their part files durable and send what they
 * wrote, and the tokens of what is still in flight, to rank 0, which
 * writes a checkpoint generation. */
typedef struct mr_runner_commit mr_runner_commit;
int mr_runner_commit_new(const mr_job *job, mr_checkpoint_state *state, mr_comm *comm,
                         mr_runner_commit **out);
void mr_runner_commit_free(mr_runner_commit *c);
/* This rank claimed `shard`: the lines its checkpoint had in flight are
 * carried until they are read again.  Returns an exit code. */
int mr_runner_commit_open(mr_runner_commit *c, uint32_t shard);
/* Whether line `line_no` of `shard` was in flight at the checkpoint this
 * attempt resumed from and is not read again yet. */
bool mr_runner_commit_is_carried(const mr_runner_commit *c, uint32_t shard, uint64_t line_no);
/* Whether its generation `choice` was, and the completion tokens it had
 * generated then (valid until it is submitted).  A choice that had
 * finished is not carried: it is generated anew, to the same tokens. */
bool mr_runner_commit_carried(const mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                              uint32_t choice, const int32_t **tokens, size_t *n);
/* Line `line_no` of `shard` was read to be served (a blank one too). */
void mr_runner_commit_read(mr_runner_commit *c, uint32_t shard, uint64_t line_no);
/* Its generation `choice` went into the engine as `handle`; the line's
 * record comes once every choice has finished.  Returns an exit code. */
int mr_runner_commit_submitted(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                               uint32_t choice, uint64_t handle);
/* Generation `choice` of the line finished; the line waits for others. */
void mr_runner_commit_choice_done(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                                  uint32_t choice);
/* Every line of `shard` has been read. */
void mr_runner_commit_read_all(mr_runner_commit *c, uint32_t shard);
/* The record of line `line_no` of `shard` was written: `bytes` to the
 * results part, or to the errors part when is_error; a result's token
 * counts.  Once every line is read and written, the shard is done. */
void mr_runner_commit_written(mr_runner_commit *c, uint32_t shard, uint64_t line_no,
                              bool is_error, size_t bytes, int64_t prompt_tokens,
                              int64_t completion_tokens);
/* Rank 0: whether interval_seconds have passed since the last checkpoint. */
bool mr_runner_commit_due(const mr_runner_commit *c);
/* The first step of this attempt is done (a resumed run counts the restart
 * as time lost to its preemption). */
void mr_runner_commit_first_step(mr_runner_commit *c);
/* The checkpoint about to be written ends the attempt on a stop signal: a
 * user's stop (by_user) or a preemption notice; the next resume counts it. */
void mr_runner_commit_stopping(mr_runner_commit *c, bool by_user);
/* Collective, once every rank's part files are synced: gather (with the
 * tokens `engine` has generated for the lines in flight), checkpoint.
 * Returns an exit code. */
int mr_runner_commit_checkpoint(mr_runner_commit *c, mr_runner_balancer *balancer,
                                const mr_engine *engine);
/* Rank 0: the checkpoints this attempt wrote and what they cost, a line,
 * and the job's totals over all attempts when it has resumed. */
void mr_runner_commit_report(const mr_runner_commit *c, double wall_seconds);

/* Run-folder file names, relative to [job] run_dir. */
#define MR_RUN_PLAN "plan.json"
#define MR_RUN_JOB "job.ini"
#define MR_RUN_RESULTS "results.jsonl"
#define MR_RUN_ERRORS "errors.jsonl"
#define MR_RUN_EPLB_LOG "eplb.jsonl"        /* one record per online EPLB decision */
#define MR_RUN_EXPERT_LOAD "expert_load.csv" /* the run's expert load, as a trace */
#define MR_RUN_PARTS "parts"                /* per-shard part files while serving */
#define MR_RUN_LOCK "owner.lock"            /* the owner's lock and record */
#define MR_RUN_HEARTBEATS "ranks"           /* each rank's heartbeat, for stall detection */

/* "DIR/NAME" in a buffer the caller frees, or NULL when out of memory. */
char *mr_runner_path(const char *dir, const char *name);
void mr_runner_print_plan(FILE *to, const mr_plan *plan);
/* Build the plan of a loaded job, printing problems; returns an exit code. */
int mr_runner_build_plan(const mr_job *job, mr_plan *plan);

int mr_runner_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
