/* Growable byte buffer shared by the writers in this module. */
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs.h"

int mr_buf_reserve(mr_buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return MR_JOBS_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2)
            return MR_JOBS_ENOMEM;
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (!data)
        return MR_JOBS_ENOMEM;
    b->data = data;
    b->cap = cap;
    return MR_JOBS_OK;
}

/* Keeps data NUL-terminated so that callers may treat it as a string. */
int mr_buf_append(mr_buf *b, const void *data, size_t len)
{
    int rc = mr_buf_reserve(b, len);
    if (rc != MR_JOBS_OK)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return MR_JOBS_OK;
}

void mr_buf_free(mr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
