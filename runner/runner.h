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

#include "engine/engine.h"
#include "jobs/jobs.h"

/* Exit codes, documented in docs/cli.md. */
enum {
    MR_EXIT_OK = 0,
    MR_EXIT_FAILED = 1,    /* a system error: I/O, memory, a signal */
    MR_EXIT_USAGE = 2,     /* the command line is wrong */
    MR_EXIT_INVALID = 3    /* the job, an input, the model or the run folder is wrong */
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
int mr_runner_validate(int argc, char **argv);
int mr_runner_status(int argc, char **argv);
int mr_runner_report(int argc, char **argv);
int mr_runner_help(int argc, char **argv);
int mr_runner_make_model(int argc, char **argv);
int mr_runner_tokenize(int argc, char **argv);
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
    MR_ARGS_OPERAND_OPTIONAL = 0x4000
};

typedef struct {
    const char *operand; /* the job file or run folder */
    mr_job_override *overrides;
    size_t n_overrides;
    bool print, json, decode;
    const char *preset, *seed; /* as given; the command checks them */
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
/* Load RUN_DIR/plan.json, printing problems; returns an exit code. */
int mr_runner_load_plan(const char *dir, mr_plan *plan);
/* Open a run-folder file for reading; *f is NULL when it does not exist.
 * *path (freed by the caller) names it for messages.  Returns an exit code. */
int mr_runner_open_run_file(const char *dir, const char *name, FILE **f, char **path);
/* Count the lines of a run-folder file; a missing file has none. */
int mr_runner_count_lines(const char *dir, const char *name, uint64_t *lines);

/* The ranks of a job: this one's place in them and the communicator the
 * engine exchanges tokens through.  Without MPI it is a world of one. */
typedef struct {
    bool mpi;
    int rank, size;
    mr_comm *comm;
} mr_runner_world;

/* MPI_Init, for every moerun process that joins an MPI world. */
void mr_runner_mpi_init(int *argc, char ***argv);
/* True in a process that mpirun or srun started. */
bool mr_runner_under_mpi(void);
/* launcher = local with several ranks: runs this command line (argv, from
 * the command name on) once per rank under mpirun and waits; returns an
 * exit code. */
int mr_runner_launch_local(const mr_job *job, int argc, char **argv);
/* Makes w->comm with buffers of `capacity` bytes (w->mpi set by the
 * caller); returns an exit code. */
int mr_runner_world_init(mr_runner_world *w, const mr_job *job, size_t capacity);

/* Serve every request of a planned job into its run folder, this rank's
 * share of it when there are several; `created` goes into every result
 * line.  Returns an exit code. */
int mr_runner_serve(const mr_job *job, const mr_plan *plan, bool mpi, int64_t created);

/* EPLB in a running job (balance.c). */
typedef struct mr_runner_balancer mr_runner_balancer;
/* Physical expert slots per rank: experts plus [eplb] redundant_experts,
 * rounded up to fill every rank. */
int mr_runner_eplb_slots_per_rank(const mr_job *job, int experts, int ranks);
/* Nodes the hierarchical solvers may use: the hosts, when each runs as many
 * ranks; else 1. */
int mr_runner_eplb_nodes(mr_comm *comm);
/* The placement a job starts with: solved from [eplb] calibration in a
 * static mode, else contiguous.  Prints problems; returns an exit code. */
int mr_runner_eplb_initial(const mr_job *job, const mr_model_config *cfg, int ranks, int nodes,
                           bool print, mr_eplb_placement *out);
int mr_runner_balancer_new(const mr_job *job, mr_model *model, mr_engine *engine, mr_comm *comm,
                           mr_runner_balancer **out);
void mr_runner_balancer_free(mr_runner_balancer *b);
/* After every engine step, on every rank (collective every step_interval
 * steps in an online mode). */
int mr_runner_balancer_step(mr_runner_balancer *b);
/* At the end, on every rank: the last measurement and expert_load.csv. */
int mr_runner_balancer_finish(mr_runner_balancer *b);
int mr_runner_balancer_rebalances(const mr_runner_balancer *b);

/* Per-shard part files under RUN_DIR/parts, joined at the end. */
int mr_runner_parts_open(const char *run_dir, uint32_t shard, FILE **results, FILE **errors);
int mr_runner_parts_close(FILE *f);
int mr_runner_parts_join(const char *run_dir, size_t n_shards);

/* Run-folder file names, relative to [job] run_dir. */
#define MR_RUN_PLAN "plan.json"
#define MR_RUN_JOB "job.ini"
#define MR_RUN_RESULTS "results.jsonl"
#define MR_RUN_ERRORS "errors.jsonl"
#define MR_RUN_EPLB_LOG "eplb.jsonl"        /* one record per online EPLB decision */
#define MR_RUN_EXPERT_LOAD "expert_load.csv" /* the run's expert load, as a trace */

/* "DIR/NAME" in a buffer the caller frees, or NULL when out of memory. */
char *mr_runner_path(const char *dir, const char *name);
void mr_runner_print_plan(FILE *to, const mr_plan *plan);
/* Build the plan of a loaded job, printing problems; returns an exit code. */
int mr_runner_build_plan(const mr_job *job, mr_plan *plan);

int mr_runner_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
