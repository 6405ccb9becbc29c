/*
 * moerun preflight: the checks an operator runs on a host before putting a
 * job on it, one file per kind of hardware.  Each check prints its lines
 * through mr_preflight_say and counts the FAILs there.
 */
#ifndef MR_RUNNER_PREFLIGHT_H
#define MR_RUNNER_PREFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs/jobs.h"

typedef enum { MR_PREFLIGHT_OK, MR_PREFLIGHT_WARN, MR_PREFLIGHT_FAIL } mr_preflight_level;

typedef struct {
    const mr_job *job; /* NULL when no job was given */
    int fails;
} mr_preflight;

void mr_preflight_say(mr_preflight *pf, mr_preflight_level level, const char *name,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "23.5 GiB": bytes in the largest binary unit that keeps a figure >= 1. */
void mr_preflight_bytes(char out[16], uint64_t bytes);

/* The bytes of the job's model's *.safetensors files: what the ranks of a
 * host map between them, and every tensor of the model.  Returns false
 * with the reason in err. */
bool mr_preflight_weights_size(const mr_job *job, uint64_t *bytes, char *err, size_t errlen);

void mr_preflight_cpu(mr_preflight *pf);
void mr_preflight_memory(mr_preflight *pf);
void mr_preflight_shm(mr_preflight *pf);
void mr_preflight_gpu(mr_preflight *pf);
void mr_preflight_rdma(mr_preflight *pf);
void mr_preflight_mpi(mr_preflight *pf);

/* The hidden `moerun preflight --mpi-probe` that mr_preflight_mpi starts
 * under mpirun; returns an exit code. */
int mr_preflight_mpi_probe(void);

/* What the probe's ranks exchange: every rank's host name, in rank order,
 * into hosts + rank * MR_PREFLIGHT_HOST_LEN.  Returns an MPI error code. */
#define MR_PREFLIGHT_HOST_LEN 256
int mr_preflight_exchange(char *hosts);
/* One layer's dispatch + combine between the probe's ranks (collective):
 * the slowest rank's seconds and the bytes this rank sent. */
int mr_preflight_measure_exchange(int ranks, double *seconds, double *bytes, char *err,
                                  size_t errlen);

/* The verdicts, pure so the unit tests can reach them. */

/* FAIL when the weights do not fit in available memory, WARN when they
 * leave less than half their size to spare. */
mr_preflight_level mr_preflight_memory_verdict(uint64_t available, uint64_t weights);

/* What one rank of a job holds on its GPU: the model's tensors but the
 * routed experts of the slots other ranks hold, and its KV cache. */
typedef struct {
    uint64_t weights;  /* every tensor of the model: its *.safetensors bytes */
    uint64_t expert;   /* one routed expert (gate, up, down) in every MoE layer */
    uint64_t experts;  /* routed experts per MoE layer in the model */
    uint64_t slots;    /* expert slots per MoE layer the rank holds (replicas count) */
    uint64_t kv_cache; /* the KV cache the job asks for */
} mr_preflight_gpu_need;

/* The rank's bytes into *bytes (its weights into *weights); FAIL when they
 * exceed the device's memory, else OK. */
mr_preflight_level mr_preflight_gpu_fit(const mr_preflight_gpu_need *need, uint64_t device,
                                        uint64_t *weights, uint64_t *bytes);

/* An RDMA port's link as ibstat names it: "4x", "NDR", 400000 Mb/s. */
typedef struct {
    const char *width, *speed;
    uint64_t mbps;
} mr_preflight_link;

/* Translate ibv_port_attr's active_width and active_speed codes; returns
 * -1 for a code it does not know (names and rate are then NULL and 0). */
int mr_preflight_link_rate(unsigned width_code, unsigned speed_code, mr_preflight_link *link);

#endif
