/* Private to kernels/: the cuda backend as backend.c registers it.  C; the
 * backend itself is CUDA C++ (the .cu files of kernels/cuda/), built when nvcc is. */
#ifndef MR_KERNELS_CUDA_BACKEND_H
#define MR_KERNELS_CUDA_BACKEND_H

#include <stddef.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const mr_ops mr_cuda_ops;
/* Picks the GPU (the local rank's, round robin, when Open MPI says which
 * rank this is on its host; else device 0), makes its stream; -1 with err
 * filled when there is no usable GPU. */
int mr_cuda_init(mr_backend *be, char *err, size_t errlen);
void mr_cuda_release(mr_backend *be);

#ifdef __cplusplus
}
#endif

#endif
