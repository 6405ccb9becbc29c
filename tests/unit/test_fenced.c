/* The "fenced" backend's fence: its buffers fault when the host touches
 * them outside an op, and are there to ops, upload and download; an op
 * handed memory of the wrong kind (kernels.h) is refused, naming the
 * argument.  The suite "fenced" runs whole jobs on it. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/kernels.h"

TestSuite(fenced_memory);

static mr_backend *fenced(void)
{
    mr_backend *be;
    char err[256];
    cr_assert_eq(mr_backend_create("fenced", 1, &be, err, sizeof err), 0, "%s", err);
    return be;
}

/* Touches p in a child; returns the signal that ended it (0: none). */
static int touch(volatile float *p, bool write)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* The default action, whatever a sanitizer installed. */
        signal(SIGSEGV, SIG_DFL);
        if (write)
            p[1] = 2.0f;
        else
            (void)p[1];
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

Test(fenced_memory, a_host_access_outside_an_op_faults)
{
    mr_backend *be = fenced();
    const mr_ops *op = be->ops;
    float host[4] = {1, 2, 3, 4}, back[4] = {0};
    float *buf;
    const void *weight;
    cr_assert_eq(op->alloc(be, sizeof host, (void **)&buf), MR_KERNELS_OK);
    cr_assert_eq(op->upload(be, buf, host, sizeof host), MR_KERNELS_OK);
    cr_assert_eq(op->map_weights(be, host, sizeof host, &weight), MR_KERNELS_OK);
    cr_assert_eq(touch(buf, false), SIGSEGV, "a read of a buffer outside an op");
    cr_assert_eq(touch(buf, true), SIGSEGV, "a write to a buffer outside an op");
    cr_assert_eq(touch((volatile float *)weight, false), SIGSEGV, "a read of a weight");
    cr_assert_eq(touch(host, false), 0, "host memory stays the host's");
    /* Ops, upload and download reach the buffers: y = buf + weight. */
    cr_assert_eq(op->add(be, buf, weight, 4), MR_KERNELS_OK);
    cr_assert_eq(op->download(be, back, buf, sizeof back), MR_KERNELS_OK);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(back[i], 2 * host[i]);
    cr_assert_eq(touch(buf, false), SIGSEGV, "the fence closes after each op");
    cr_assert_eq(op->free(be, buf), MR_KERNELS_OK);
    mr_backend_free(be);
}

Test(fenced_memory, memory_of_the_wrong_kind_is_refused_by_name)
{
    mr_backend *be = fenced();
    const mr_ops *op = be->ops;
    float host[1024] = {0};
    float *a, *b;
    cr_assert_eq(op->alloc(be, sizeof host, (void **)&a), MR_KERNELS_OK);
    cr_assert_eq(op->alloc(be, sizeof host, (void **)&b), MR_KERNELS_OK);

    cr_assert_eq(op->add(be, a, host, 4), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be), "add: x is host memory, not a backend buffer");
    cr_assert_eq(op->add(be, a, b + 1020, 8), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be),
                     "add: x's 32 bytes run past the end of its 4096-byte backend buffer");
    cr_assert_eq(op->upload(be, a, b, 4), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be),
                     "upload: src is a backend buffer, where kernels.h has host or transport "
                     "memory");
    mr_ep_send s = {.n_ranks = 1, .slots_per_rank = 1, .counts = (int32_t *)a};
    cr_assert_eq(op->ep_pack(be, b, &s, 0, MR_EP_PACK_HEADER), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be),
                     "ep_pack: msg is a backend buffer, where kernels.h has host or transport "
                     "memory");
    const void *gate[1] = {host};
    int32_t offsets[2] = {0, 0};
    mr_expert_groups g = {.groups = 1, .offsets = offsets, .gate = gate, .up = gate,
                          .down = gate, .hidden = 1, .inter = 1};
    cr_assert_eq(op->expert_ffn(be, a, a, &g), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be),
                     "expert_ffn: groups->gate[] is host memory, not a backend buffer");
    /* matmul_heads reads up to the last head's slice: 3 heads 100 rows
     * apart of 2 rows of 4 floats need 202 rows, past a 256-row buffer's
     * end from row 60 */
    cr_assert_eq(op->matmul_heads(be, a, a, b, MR_TENSOR_F32, 1, 3, 2, 4, 100), MR_KERNELS_OK);
    cr_assert_eq(op->matmul_heads(be, a, a, b + 4 * 60, MR_TENSOR_F32, 1, 3, 2, 4, 100),
                 MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be),
                     "matmul_heads: w's 3232 bytes run past the end of its 4096-byte backend "
                     "buffer");

    /* A freed buffer is no buffer; its pages serve the next alloc. */
    cr_assert_eq(op->free(be, a), MR_KERNELS_OK);
    cr_assert_eq(op->add(be, b, a, 4), MR_KERNELS_EINVAL);
    cr_assert_str_eq(mr_backend_error(be), "add: x is in a freed backend buffer");
    cr_assert_eq(op->free(be, a), MR_KERNELS_EINVAL);
    float *c;
    cr_assert_eq(op->alloc(be, 16, (void **)&c), MR_KERNELS_OK);
    cr_assert_eq(c, a, "the freed gap is taken first");
    cr_assert_eq(op->add(be, c, b, 4), MR_KERNELS_OK);
    mr_backend_free(be);
}
