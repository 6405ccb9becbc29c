/* Growable byte buffer shared by the writers in this module. */
#include <stdio.h>
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

int mr_buf_vprintf(mr_buf *b, const char *fmt, va_list ap)
{
    /* Most pieces are short: format once on the stack, and again straight
     * into the buffer only when one is not. */
    char line[256];
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    int rc = n < 0 ? MR_JOBS_EINVAL : MR_JOBS_OK;
    if (rc == MR_JOBS_OK && (size_t)n < sizeof line)
        rc = mr_buf_append(b, line, (size_t)n);
    else if (rc == MR_JOBS_OK && (rc = mr_buf_reserve(b, (size_t)n)) == MR_JOBS_OK) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
    return rc;
}

int mr_buf_printf(mr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = mr_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void mr_buf_free(mr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
