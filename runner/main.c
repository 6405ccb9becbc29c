/*
 * moerun's entry point: find the command, hand it its arguments, exit with
 * what it returns.  The command table is the one list of what moerun can do;
 * `moerun --help` and `moerun help CMD` are printed from it.
 */
#include <stdio.h>
#include <string.h>

#include "runner/runner.h"

static const mr_runner_command commands[] = {
    {"run", mr_runner_run, "plan and run a job, or resume it",
     "usage: moerun run JOB.ini [--set SECTION.KEY=VALUE]... [--force-new]\n"
     "                  [--max-restarts N]\n"
     "\n"
     "Check the job and its inputs, cut the inputs into shards, write the plan\n"
     "into the run folder ([job] run_dir) and serve every request, writing\n"
     "results.jsonl and errors.jsonl there.  Progress is checkpointed every\n"
     "[checkpoint] interval_seconds.  When the run folder holds a checkpoint of\n"
     "the same job, the run resumes from it; a changed job is refused with what\n"
     "changed.  One run owns a run folder: a second run of it is refused.\n"
     "SIGTERM or SIGUSR1 (a preemption notice) and SIGINT (a user's stop, as\n"
     "`moerun stop` sends) stop every rank after its current step with its\n"
     "progress checkpointed (exit code 4); a second signal stops at once.\n"
     "\n"
     "  --set SECTION.KEY=VALUE  override one job key (repeatable)\n"
     "  --force-new              start over: remove the old run's checkpoint,\n"
     "                           parts and results first\n"
     "  --max-restarts N         launcher = local: when a rank dies, stalls or\n"
     "                           does not join, start the ranks again from the\n"
     "                           last checkpoint, up to N times (default 0)\n"
     "  -h, --help               show this help\n"
     "\n"
     "Exit codes: 0 done (bad request lines become error records), 1 system\n"
     "error, 2 bad command line, 3 invalid job, input, model or run folder (a\n"
     "changed job, a folder another run owns), 4 stopped by a signal\n"
     "(resumable), 5 a rank died, stalled or did not join, 6 disk full\n"
     "(resumable once space is freed), 7 more failed requests than [job]\n"
     "max_error_ratio allows.\n"},
    {"resume", mr_runner_resume, "go on with a stopped run from its checkpoint",
     "usage: moerun resume RUN_DIR [--set SECTION.KEY=VALUE]... [--max-restarts N]\n"
     "\n"
     "Run the job in RUN_DIR/job.ini from the last checkpoint in RUN_DIR, as\n"
     "`moerun run` does when the run folder has one, wherever the folder now is\n"
     "(run_dir is set to RUN_DIR).  Keys that do not change the results, such\n"
     "as [parallel] ranks, may be set anew: a run resumes on another number of\n"
     "ranks, with the same results.\n"
     "\n"
     "  --set SECTION.KEY=VALUE  override one job key (repeatable)\n"
     "  --max-restarts N         as for `moerun run`\n"
     "  -h, --help               show this help\n"
     "\n"
     "Exit codes as for `moerun run`; 3 also when RUN_DIR is not a run folder.\n"},
    {"validate", mr_runner_validate, "check a job, its inputs and its model path without running",
     "usage: moerun validate JOB.ini [--set SECTION.KEY=VALUE]... [--print]\n"
     "\n"
     "Load the job file, check every key, read every input line as a request and\n"
     "check the model folder.  Prints the shard plan and the first invalid lines.\n"
     "Writes nothing.\n"
     "\n"
     "  --set SECTION.KEY=VALUE  override one job key (repeatable)\n"
     "  --print                  print the job after defaults and overrides\n"
     "  -h, --help               show this help\n"
     "\n"
     "Exit codes: 0 valid (invalid request lines only warn: they become error\n"
     "records), 2 bad command line, 3 invalid job, input or model path.\n"},
    {"stop", mr_runner_stop, "stop the run that owns a run folder, resumably",
     "usage: moerun stop RUN_DIR\n"
     "\n"
     "Send the moerun that runs RUN_DIR (on this host) a user's stop, as its\n"
     "Ctrl-C would: every rank finishes its step, checkpoints and exits 4, and\n"
     "the report counts a user stop, not a preemption.  Waits up to 120 s for\n"
     "it to end.  `moerun resume RUN_DIR` goes on.\n"
     "\n"
     "Exit codes: 0 stopped, 1 it did not end in time or cannot be signalled,\n"
     "2 bad command line, 3 nothing runs RUN_DIR, or its owner is on another\n"
     "host.\n"},
    {"status", mr_runner_status, "show the plan and progress of a run folder",
     "usage: moerun status RUN_DIR [--json]\n"
     "\n"
     "Print the inputs, shards and request counts of the run's plan, its progress\n"
     "at the last sample (the job's own progress line: requests done, tokens/s,\n"
     "ETA), the result files once joined, the progress the newest good\n"
     "checkpoint committed and every checkpoint generation (damaged ones with\n"
     "why).\n"
     "\n"
     "  --json      print it as one JSON object (docs/cli.md lists its fields)\n"
     "  -h, --help  show this help\n"
     "\n"
     "Exit codes: 0 shown, 1 unreadable files, 2 bad command line, 3 not a run\n"
     "folder or a damaged plan.\n"},
    {"report", mr_runner_report, "summarise what a run served",
     "usage: moerun report RUN_DIR [--json]\n"
     "\n"
     "Count served and failed requests and sum the token usage of the result\n"
     "lines of a run folder.\n"
     "\n"
     "  --json      print the summary as one JSON object\n"
     "  -h, --help  show this help\n"
     "\n"
     "Exit codes: 0 shown, 1 unreadable files, 2 bad command line, 3 not a run\n"
     "folder or damaged result lines.\n"},
    {"checkpoint", mr_runner_checkpoint, "move a run folder to another cluster as one file",
     "usage: moerun checkpoint export RUN_DIR FILE.tar.zst\n"
     "       moerun checkpoint import FILE.tar.zst RUN_DIR\n"
     "\n"
     "export writes the run folder (plan, job, checkpoints, parts, results) as a\n"
     "zstd-compressed tar file, atomically.  import unpacks one into RUN_DIR,\n"
     "which must not exist or be empty; a bundle with an absolute path, a `..`,\n"
     "a link or a device file is refused whole, naming the entry, and leaves\n"
     "nothing behind.  Then `moerun resume RUN_DIR` goes on with the run.\n"
     "\n"
     "Exit codes: 0 done, 1 system error, 2 bad command line, 3 not a run folder,\n"
     "or a damaged or refused bundle.\n"},
    {"make-model", mr_runner_make_model, "write a random Qwen3-MoE model for tests and benchmarks",
     "usage: moerun make-model DIR [--preset tiny|small|mixtral-tiny|deepseek-tiny|\n"
     "                             deepseek-small] [--seed N] [--dtype bf16|f16|fp8]\n"
     "\n"
     "Write a random-initialised Qwen3-MoE model in the Hugging Face layout into\n"
     "DIR: config.json, model.safetensors (bf16), tokenizer.json (a byte-level BPE\n"
     "vocabulary trained on moerun's bundled text) and tokenizer_config.json\n"
     "(ChatML).  Its routers are skewed like a trained model's: a few hot experts\n"
     "per layer, and other hot experts for text on cooking, code or travel.\n"
     "\n"
     "  --preset tiny   hidden 256, 4 layers, 64 experts, top-8 (about 50 MB; tests)\n"
     "  --preset small  hidden 1024, 8 layers, 128 experts, top-8 (about 3.3 GB;\n"
     "                  benchmarks)\n"
     "  --preset mixtral-tiny\n"
     "                  a Mixtral (MixtralForCausalLM) of hidden 256, 4 layers,\n"
     "                  8 experts, top-2, no q/k norm (about 30 MB; tests)\n"
     "  --preset deepseek-tiny\n"
     "                  a DeepSeek-V3 (DeepseekV3ForCausalLM) of hidden 256, 3\n"
     "                  layers (the first dense), MLA, 16 experts in 2 groups of\n"
     "                  8 (best group kept), top-4, 1 shared expert (about 11 MB;\n"
     "                  tests)\n"
     "  --preset deepseek-small\n"
     "                  the same at small's scale: hidden 1024, 8 layers, MLA,\n"
     "                  128 experts in 8 groups of 16 (best 4 kept), top-8\n"
     "                  (about 2.7 GB; benchmarks beside small)\n"
     "  --seed N        weights seed (default 0); the same seed writes the same bytes\n"
     "  --dtype T       bf16 (default), f16, or fp8: the projections in FP8 e4m3\n"
     "                  with a scale per 128 x 128 tile (weight_scale_inv), as\n"
     "                  DeepSeek-V3 and Qwen3-FP8 ship them\n"
     "  -h, --help      show this help\n"
     "\n"
     "Exit codes: 0 written, 1 system error, 2 bad command line.\n"},
    {"render", mr_runner_render, "show the exact prompt a model sees for a request",
     "usage: moerun render MODEL_DIR\n"
     "\n"
     "Reads request bodies on standard input, one JSON object per line: a chat\n"
     "body with \"messages\" (and, if wanted, \"chat_template_kwargs\", e.g.\n"
     "{\"enable_thinking\": false}) or a completion body with \"prompt\".  Prints\n"
     "one JSON object per line with the prompt the model is given, as the model's\n"
     "chat template (tokenizer_config.json) renders it, and its token ids:\n"
     "{\"prompt\": \"...\", \"n_tokens\": N, \"token_ids\": [...]}.  A line that\n"
     "cannot be served prints {\"line\": N, \"error\": \"...\"} instead.\n"
     "Requests are read and prepared as `moerun run` prepares them.\n"
     "\n"
     "  -h, --help  show this help\n"
     "\n"
     "  $ echo '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}' | \\\n"
     "      moerun render build/models/tiny\n"
     "\n"
     "Exit codes: 0 done, 1 system error, 2 bad command line, 3 a bad tokenizer or\n"
     "chat template, or a line that could not be rendered.\n"},
    {"tokenize", mr_runner_tokenize, "turn text into token ids, or ids into text",
     "usage: moerun tokenize PATH [--decode]\n"
     "\n"
     "PATH is a model folder or a tokenizer.json.  Reads one JSON string per line\n"
     "on standard input and prints the token ids of each as one JSON array per\n"
     "line, as Hugging Face's tokenizer.encode(text, add_special_tokens=False)\n"
     "gives them; special tokens written in the text (<|im_start|>) are matched.\n"
     "\n"
     "  --decode    the reverse: one JSON array of ids per line in, one JSON string\n"
     "              per line out (bytes that are not whole UTF-8 characters come\n"
     "              out as U+FFFD)\n"
     "  -h, --help  show this help\n"
     "\n"
     "  $ echo '\"Hello, world!\"' | moerun tokenize build/models/tiny\n"
     "\n"
     "Exit codes: 0 done, 1 system error, 2 bad command line, 3 a bad tokenizer or\n"
     "input line (the message names the line; lines before it were printed).\n"},
    {"preflight", mr_runner_preflight, "check this host before a job is put on it",
     "usage: moerun preflight [JOB.ini] [--set SECTION.KEY=VALUE]...\n"
     "\n"
     "Check what a job needs of this host and print one line per finding:\n"
     "  cpu     online cores, AVX-512 and AVX512_BF16; with a job, whether its\n"
     "          ranks on this host times [engine] threads fit the cores\n"
     "  memory  total and available RAM; with a job, against the size of the\n"
     "          model's *.safetensors files\n"
     "  shm     size and free space of /dev/shm (ranks on one host exchange\n"
     "          tokens through it)\n"
     "  gpu     the GPUs CUDA sees, with their memory\n"
     "  rdma    RDMA ports: state, link layer, width and speed (as ibstat)\n"
     "  mpi     that mpirun starts [parallel] ranks (at least 2) of moerun, and\n"
     "          where they ran\n"
     "Each line starts with OK, WARN (the job can run, maybe slower) or FAIL.\n"
     "\n"
     "  --set SECTION.KEY=VALUE  override one job key (repeatable)\n"
     "  -h, --help               show this help\n"
     "\n"
     "Exit codes: 0 no FAIL, 1 system error, 2 bad command line, 3 a check\n"
     "FAILed or the job is invalid.\n"},
    {"eplb", mr_runner_eplb, "plan expert placements for a load trace and compare policies",
     "usage: moerun eplb plan TRACE --ranks N [--nodes M] [--redundant R] [--groups G]\n"
     "                        [--policy P[,P...]] [--json FILE] [--eval TRACE2]\n"
     "                        [--current FILE [--max-moves N]]\n"
     "\n"
     "Choose where each expert of each MoE layer goes (and which are replicated)\n"
     "for the load in TRACE, a CSV of tokens per expert, one row per layer\n"
     "(docs/eplb.md), with each policy asked for, and print how well each\n"
     "balances the ranks: balancedness (mean over max rank load, summed over\n"
     "layers; 1 is perfect), the worst layer's max/mean, the bound no placement\n"
     "with these slots can beat, the gap to it and the solve time.  The first\n"
     "line is the placement before: experts in order over the ranks, or --current.\n"
     "\n"
     "  --ranks N          expert-parallel ranks (required)\n"
     "  --nodes M          nodes the ranks are on, N/M each (default 1)\n"
     "  --redundant R      extra slots for replicas of hot experts (default 0);\n"
     "                     experts + R must divide by N\n"
     "  --groups G         expert groups kept together on a node (default 1)\n"
     "  --policy P,...     auto, global, hierarchical, deepseek, or all (default auto)\n"
     "  --json FILE        write the figures and each plan's phy2log and logcnt\n"
     "  --eval TRACE2      also score the plans on another trace of the same shape\n"
     "  --current FILE     re-solve from the placement in FILE (a phy2log, as --json\n"
     "                     writes it: the first plan), moving few experts; prints\n"
     "                     how many each rank must newly load\n"
     "  --max-moves N      with --current: at most N experts moved (default: no limit)\n"
     "  -h, --help         show this help\n"
     "\n"
     "  $ moerun eplb plan trace.csv --ranks 64 --nodes 8 --redundant 64 --groups 8 \\\n"
     "        --policy all --eval next.csv\n"
     "\n"
     "Exit codes: 0 planned, 1 system error, 2 bad command line, 3 a bad trace or\n"
     "options that do not fit it (the message names the line or the option).\n"},
    {"help", mr_runner_help, "show help for a command, or every job key",
     "usage: moerun help [COMMAND | keys]\n"
     "\n"
     "`moerun help keys` lists every job file key with its type, default and\n"
     "meaning (docs/job-file.md has the same table).\n"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const mr_runner_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

const char *mr_runner_usage(const char *command)
{
    const mr_runner_command *cmd = find_command(command);
    return cmd ? cmd->usage : "";
}

static void print_overview(FILE *to)
{
    fprintf(to, "moerun %s: batch inference for mixture-of-experts models\n\n"
                "usage: moerun COMMAND [ARGS]...\n\ncommands:\n", MR_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(to, "\n`moerun help COMMAND` or `moerun COMMAND --help` shows one command.\n"
                "Exit codes: 0 ok, 1 system error, 2 usage, 3 invalid job, input,\n"
                "model or run folder, 4 stopped by a signal, 5 a rank failed, 6 disk\n"
                "full, 7 too many failed requests (docs/cli.md).\n");
}

static void print_keys(void)
{
    size_t n;
    const mr_job_key_info *keys = mr_job_keys(&n);
    const char *section = "";
    for (size_t i = 0; i < n; i++) {
        if (strcmp(section, keys[i].section) != 0) {
            section = keys[i].section;
            printf("%s[%s]\n", i ? "\n" : "", section);
        }
        printf("  %-18s %-7s ", keys[i].key, keys[i].type);
        if (keys[i].flags & MR_KEY_REQUIRED)
            printf("required");
        else
            printf("default %s", keys[i].default_value ? keys[i].default_value : "(none)");
        if (keys[i].choices)
            printf("; one of %s", keys[i].choices);
        if (keys[i].flags & MR_KEY_RESUME)
            printf("; may change on resume");
        printf("\n      %s\n", keys[i].help);
    }
}

int mr_runner_help(int argc, char **argv)
{
    if (argc < 2) {
        print_overview(stdout);
        return MR_EXIT_OK;
    }
    if (argc > 2)
        return mr_runner_usage_error("help", "one topic at a time, got %d", argc - 1);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(mr_runner_usage("help"), stdout);
        return MR_EXIT_OK;
    }
    if (strcmp(argv[1], "keys") == 0) {
        print_keys();
        return MR_EXIT_OK;
    }
    const mr_runner_command *cmd = find_command(argv[1]);
    if (!cmd)
        return mr_runner_usage_error("help", "no command or topic '%s'", argv[1]);
    fputs(cmd->usage, stdout);
    return MR_EXIT_OK;
}

static const char *suggest_command(const char *name)
{
    const char *names[N_COMMANDS];
    for (size_t i = 0; i < N_COMMANDS; i++)
        names[i] = commands[i].name;
    return mr_suggest(name, names, N_COMMANDS);
}

int main(int argc, char **argv)
{
    mr_runner_mark_start();
    if (argc < 2) {
        print_overview(stderr);
        return MR_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return mr_runner_help(1, argv + 1);
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("moerun %s (backends: %s", MR_VERSION, mr_backend_names());
#ifdef MR_CUDART_VERSION /* the Makefile's, from the toolkit's cuda_runtime_api.h */
        printf("; built with CUDA %d.%d", MR_CUDART_VERSION / 1000,
               MR_CUDART_VERSION % 1000 / 10);
#endif
        printf(")\n");
        return MR_EXIT_OK;
    }
    const mr_runner_command *cmd = find_command(name);
    if (cmd)
        return cmd->entry(argc - 1, argv + 1);
    const char *near = suggest_command(name);
    fprintf(stderr, "moerun: unknown command '%s'%s%s%s\nRun 'moerun --help' for the list.\n",
            name, near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    return MR_EXIT_USAGE;
}
