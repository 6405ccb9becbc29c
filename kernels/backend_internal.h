/* Private to kernels/: what every backend shares (backend.c): the error
 * message of a failed op and the checks of an op's host-side arguments.
 * Included by C and by CUDA C++. */
#ifndef MR_KERNELS_BACKEND_INTERNAL_H
#define MR_KERNELS_BACKEND_INTERNAL_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a failed op's message in be->error and returns `status`
 * (backend.c). */
int mr_backend_fail(mr_backend *be, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* MR_KERNELS_EINVAL naming `op` unless rows >= 0 and dim >= 1. */
int mr_kernels_check_rows(mr_backend *be, const char *op, int rows, int dim);
/* MR_KERNELS_EINVAL unless rows >= 0 and both widths >= 1. */
int mr_kernels_check_matmul(mr_backend *be, int rows, int out_dim, int in_dim);
/* MR_KERNELS_EINVAL unless rows >= 0, heads and both widths >= 1 and
 * head_stride_rows >= 0. */
int mr_kernels_check_matmul_heads(mr_backend *be, int rows, int heads, int out_dim, int in_dim,
                                  int head_stride_rows);
/* MR_KERNELS_EINVAL unless groups >= 0 and hidden, inter >= 1. */
int mr_kernels_check_groups(mr_backend *be, const mr_expert_groups *g);
/* MR_KERNELS_EINVAL unless k and the replicas are in range (host values
 * only: a device checks logcnt itself). */
int mr_kernels_check_route(mr_backend *be, const mr_route_args *a);
int mr_kernels_check_mla(mr_backend *be, const mr_mla_args *a);
/* MR_KERNELS_EINVAL unless the heads, head_dim and block_size make sense. */
int mr_kernels_check_attention(mr_backend *be, const mr_attention_args *a);

#ifdef __cplusplus
}
#endif

#endif
