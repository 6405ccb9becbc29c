/* Private to engine/: what config.c, safetensors.c and testmodel/safetensors_write.c
 * share. */
#ifndef MR_ENGINE_WEIGHTS_INTERNAL_H
#define MR_ENGINE_WEIGHTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/engine.h"

struct cJSON;

/* Reads and parses the JSON file `path` (at most max_bytes long).  A syntax
 * error names the file and the line.  The caller frees *out. */
int mr_json_file_load(const char *path, size_t max_bytes, struct cJSON **out, char *err,
                      size_t errlen);

/* "an integer", "a string", ...: what a JSON value is, for messages. */
const char *mr_json_kind(const struct cJSON *item);

/* A safetensors dtype.  Every dtype of the format is known, so a checkpoint
 * holding, say, an I64 tensor still has its offsets checked; only the
 * supported ones can be handed to the kernels. */
typedef struct {
    const char *name; /* as in the header: "BF16" */
    size_t size;      /* bytes per element */
    bool supported;
    mr_tensor_type type; /* meaningful when supported */
} mr_st_dtype;

const mr_st_dtype *mr_st_dtype_by_name(const char *name);
const mr_st_dtype *mr_st_dtype_by_type(mr_tensor_type type);

/* Safetensors headers are capped at 100 MB by the format itself. */
#define MR_ST_MAX_HEADER (100u * 1000u * 1000u)
#define MR_ST_MAX_DIMS 4

#endif
