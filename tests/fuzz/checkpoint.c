/*
 * Fuzz target: checkpoint generations (checkpoint/store.c, state.c).  The
 * first byte says what the rest of the input is:
 *   even  a generation file, state-000001.ckpt.zst: the 56-byte header with
 *         its checksum, the zstd frame, the payload's checksum, the JSON;
 *         read by mr_checkpoint_load_latest and mr_checkpoint_list, as
 *         `moerun resume` and `moerun status` read it;
 *   odd   the JSON payload alone, given to the parser the reader calls once
 *         the checksums pass (mutations rarely get past them).
 * A payload that parses must write back as the same JSON, or a resumed run
 * would checkpoint a state other than the one it read.
 */
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_internal.h"
#include "tests/fuzz/fuzz.h"

static char *generations;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    generations = mr_checkpoint_join(mr_fuzz_tmpdir(), MR_CHECKPOINT_DIR);
    char err[256];
    mr_fuzz_check(generations && mr_checkpoint_mkdir_p(generations, err, sizeof err) ==
                                     MR_CHECKPOINT_OK,
                  "making the checkpoint folder");
    return 0;
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    free(mr_fuzz_write(generations, "state-000001.ckpt.zst", data, size));
    mr_checkpoint_state state;
    char warning[1024], err[2048];
    int rc = mr_checkpoint_load_latest(generations, &state, warning, sizeof warning, err,
                                       sizeof err);
    if (rc == MR_CHECKPOINT_OK)
        mr_fuzz_check(state.generation == 1, "the generation loaded is the one there");
    else
        mr_fuzz_check(err[0], "a refused checkpoint says why");
    mr_checkpoint_state_free(&state);

    mr_checkpoint_info *list;
    size_t n;
    rc = mr_checkpoint_list(generations, &list, &n, err, sizeof err);
    mr_fuzz_check(rc == MR_CHECKPOINT_OK && n == 1, "the generation is listed");
    mr_fuzz_check(list[0].good || list[0].problem[0], "a damaged generation says why");
    free(list);
}

static void fuzz_payload(const uint8_t *data, size_t size)
{
    mr_checkpoint_state state, again;
    char err[1024], *json = NULL, *json_again = NULL;
    size_t len, len_again;
    if (mr_checkpoint_state_from_json(&state, (const char *)data, size, err, sizeof err) !=
        MR_CHECKPOINT_OK) {
        mr_fuzz_check(err[0], "a refused payload says why");
        return;
    }
    mr_fuzz_check(mr_checkpoint_state_to_json(&state, &json, &len, err, sizeof err) ==
                          MR_CHECKPOINT_OK &&
                      mr_checkpoint_state_from_json(&again, json, len, err, sizeof err) ==
                          MR_CHECKPOINT_OK,
                  "a state read writes and reads again");
    mr_fuzz_check(mr_checkpoint_state_to_json(&again, &json_again, &len_again, err,
                                              sizeof err) == MR_CHECKPOINT_OK &&
                      len_again == len && memcmp(json, json_again, len) == 0,
                  "a state read writes back the same JSON");
    char what[1024];
    (void)mr_checkpoint_fingerprint_diff(&state.fingerprint, &again.fingerprint, what,
                                         sizeof what);
    free(json);
    free(json_again);
    mr_checkpoint_state_free(&state);
    mr_checkpoint_state_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        fuzz_file(data + 1, size - 1);
    else
        fuzz_payload(data + 1, size - 1);
    return 0;
}
