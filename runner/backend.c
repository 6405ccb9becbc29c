/*
 * The job's [engine] backend: the kernels' name for it, the check that
 * refuses backend = cuda before the job touches its run folder, and the
 * lines a job logs about the backend its ranks run on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "runner/runner.h"

const char *mr_runner_backend_name(const mr_job *job)
{
    static const char *const names[] = {[MR_BACKEND_AUTO] = "auto",
                                        [MR_BACKEND_CPU] = "cpu",
                                        [MR_BACKEND_CUDA] = "cuda",
                                        [MR_BACKEND_EXACT] = "exact",
                                        [MR_BACKEND_FENCED] = "fenced",
                                        [MR_BACKEND_REF] = "ref"};
    return names[job->engine_backend];
}

mr_tensor_type mr_runner_kv_type(const mr_job *job)
{
    return job->engine_kv_dtype == MR_KV_BF16 ? MR_TENSOR_BF16 : MR_TENSOR_F32;
}

int mr_runner_backend_check(const mr_job *job, char *err, size_t errlen)
{
    /* Only cuda can be missing on a host: cpu and ref always run, and
     * auto falls back to cpu. */
    if (job->engine_backend != MR_BACKEND_CUDA)
        return MR_EXIT_OK;
    mr_backend *be;
    char why[512];
    if (mr_backend_create(mr_runner_backend_name(job), 1, &be, why, sizeof why) == 0) {
        mr_backend_free(be);
        return MR_EXIT_OK;
    }
    snprintf(err, errlen, "%s: [engine] backend = cuda: %s; backend = auto falls back to cpu "
                          "where no GPU is usable",
             job->source, why);
    return MR_EXIT_INVALID;
}

/* What each rank tells rank 0 about its backend. */
typedef struct {
    char name[16];
    char note[240];
} rank_backend;

int mr_runner_backend_say(const mr_job *job, mr_comm *comm, const mr_model *model)
{
    int rank = mr_comm_rank(comm), size = mr_comm_size(comm);
    rank_backend mine = {.name = ""}, *all = calloc((size_t)size, sizeof *all);
    snprintf(mine.name, sizeof mine.name, "%s", mr_model_backend_name(model));
    snprintf(mine.note, sizeof mine.note, "%s", mr_model_backend_note(model));
    char err[512] = "out of memory";
    int rc = all ? mr_comm_ctrl_allgather(comm, &mine, sizeof mine, all, err, sizeof err)
                 : MR_ENGINE_ENOMEM;
    if (rc != MR_ENGINE_OK) {
        fprintf(stderr, "moerun run: rank %d: %s\n", rank, err);
        free(all);
        return MR_EXIT_FAILED;
    }
    if (rank == 0) {
        /* Ranks on different hosts may choose differently under auto:
         * each backend with its count of ranks, in rank order. */
        printf("job %s: backend", job->job_name);
        for (int r = 0; r < size; r++) {
            int first = 0, count = 0;
            while (strcmp(all[first].name, all[r].name) != 0)
                first++;
            if (first < r)
                continue; /* counted at its first rank */
            for (int o = r; o < size; o++)
                count += strcmp(all[o].name, all[r].name) == 0;
            if (count == size)
                printf(" %s", all[r].name);
            else
                printf("%s %s on %d rank%s", r ? "," : "", all[r].name, count,
                       count == 1 ? "" : "s");
        }
        printf("%s\n", job->engine_backend == MR_BACKEND_AUTO ? " (backend = auto)" : "");
        int noted = 0, first_note = -1;
        for (int r = 0; r < size; r++)
            if (all[r].note[0]) {
                noted++;
                first_note = first_note < 0 ? r : first_note;
            }
        if (noted && size == 1)
            printf("job %s: cuda not used: %s\n", job->job_name, all[first_note].note);
        else if (noted)
            printf("job %s: cuda not used on %d of %d ranks (rank %d: %s)\n", job->job_name,
                   noted, size, first_note, all[first_note].note);
        fflush(stdout);
    }
    free(all);
    return MR_EXIT_OK;
}
