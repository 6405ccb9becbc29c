/* Checkpoint generations: every field comes back, old ones are pruned, and
 * a damaged newest generation falls back to the previous good one with a
 * message that says what was lost. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "checkpoint/checkpoint.h"
#include "tests/common/fixture.h"
#include "tests/unit/checkpoint_sample.h"

static char err[1024], warning[1024];
/* Every test has a scratch folder and a sample state. */
static char *dir;
static mr_checkpoint_state s;

static void setup(void)
{
    dir = mr_test_tmpdir();
    cr_assert_eq(checkpoint_sample(&s, 12, 3, 8, 10, 2, err, sizeof err), MR_CHECKPOINT_OK, "%s",
                 err);
}

static void teardown(void)
{
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

static void write_ok(int keep)
{
    cr_assert_eq(mr_checkpoint_write(dir, &s, keep, err, sizeof err), MR_CHECKPOINT_OK, "%s",
                 err);
}

static int load(mr_checkpoint_state *got)
{
    return mr_checkpoint_load_latest(dir, got, warning, sizeof warning, err, sizeof err);
}

static char *generation_path(unsigned generation)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/state-%06u.ckpt.zst", dir, generation) > 0);
    return path;
}

static bool exists(const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    bool yes = access(path, F_OK) == 0;
    free(path);
    return yes;
}

/* Sets byte `at` of generation g (negative: from the end) to value, or
 * flips the bits of value in it. */
static void poke(unsigned g, long at, unsigned char value, bool flip)
{
    char *path = generation_path(g);
    size_t len;
    char *data = mr_test_read(path, &len);
    cr_assert(data, "%s", path);
    size_t i = at < 0 ? len - (size_t)-at : (size_t)at;
    data[i] = (char)(flip ? data[i] ^ value : value);
    free(mr_test_write(dir, strrchr(path, '/') + 1, data, len));
    free(data);
    free(path);
}

static void cut(unsigned g, off_t len)
{
    char *path = generation_path(g);
    cr_assert_eq(truncate(path, len), 0);
    free(path);
}

static void assert_same_text(const char *a, const char *b)
{
    cr_assert((!a && !b) || (a && b && strcmp(a, b) == 0), "'%s' != '%s'", a ? a : "(null)",
              b ? b : "(null)");
}

static void assert_same_bytes(const void *a, const void *b, size_t len)
{
    cr_assert(len == 0 || memcmp(a, b, len) == 0);
}

static void assert_same_state(const mr_checkpoint_state *a, const mr_checkpoint_state *b)
{
    cr_assert_eq(a->created, b->created);
    assert_same_text(a->fingerprint.job, b->fingerprint.job);
    assert_same_text(a->fingerprint.model_config, b->fingerprint.model_config);
    cr_assert_eq(a->fingerprint.n_inputs, b->fingerprint.n_inputs);
    for (size_t i = 0; i < a->fingerprint.n_inputs; i++) {
        const mr_checkpoint_input *x = &a->fingerprint.inputs[i], *y = &b->fingerprint.inputs[i];
        cr_assert_str_eq(x->path, y->path);
        cr_assert(x->compressed == y->compressed && x->size == y->size && x->xxh3 == y->xxh3);
        cr_assert_eq(x->n_shards, y->n_shards);
        for (size_t j = 0; j < x->n_shards; j++) {
            const mr_checkpoint_input_shard *u = &x->shards[j], *v = &y->shards[j];
            cr_assert(u->id == v->id && u->begin == v->begin && u->end == v->end &&
                      u->first_line == v->first_line && u->lines == v->lines &&
                      u->xxh3 == v->xxh3);
        }
    }
    cr_assert_eq(a->n_shards, b->n_shards);
    for (size_t i = 0; i < a->n_shards; i++) {
        const mr_checkpoint_shard *x = &a->shards[i], *y = &b->shards[i];
        cr_assert(x->index == y->index && x->next_line == y->next_line &&
                  x->results_offset == y->results_offset &&
                  x->errors_offset == y->errors_offset && x->done == y->done);
        cr_assert_eq(x->n_in_flight, y->n_in_flight);
        for (size_t k = 0; k < x->n_in_flight; k++) {
            const mr_checkpoint_in_flight *f = &x->in_flight[k], *g = &y->in_flight[k];
            cr_assert(f->line == g->line && f->choice == g->choice && f->n_tokens == g->n_tokens);
            assert_same_bytes(f->tokens, g->tokens, f->n_tokens * sizeof *f->tokens);
        }
    }
    const mr_checkpoint_placement *p = &a->placement, *q = &b->placement;
    cr_assert(p->n_layers == q->n_layers && p->n_logical == q->n_logical &&
              p->n_physical == q->n_physical && p->n_ranks == q->n_ranks);
    assert_same_bytes(p->phy2log, q->phy2log,
                      (size_t)p->n_layers * (size_t)p->n_physical * sizeof *p->phy2log);
    const mr_checkpoint_window *v = &a->window, *w = &b->window;
    cr_assert(v->n_layers == w->n_layers && v->n_experts == w->n_experts && v->steps == w->steps);
    assert_same_bytes(v->sum, w->sum, (size_t)v->n_layers * (size_t)v->n_experts * sizeof *v->sum);
    assert_same_bytes(&a->counters, &b->counters, sizeof a->counters);
}

/* Writes generations 1 and 2 (they differ in requests_ok). */
static void two_generations(void)
{
    write_ok(3);
    s.counters.requests_ok++;
    write_ok(3);
}

/* Loads with a fallback to generation 1, whose warning names `why`. */
static void assert_falls_back_to_1(const char *why)
{
    mr_checkpoint_state got;
    cr_assert_eq(load(&got),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_eq(got.generation, 1);
    char want[256];
    snprintf(want, sizeof want, "checkpoint state-000002 is damaged (%s", why);
    cr_assert(strstr(warning, want), "%s", warning);
    cr_assert(strstr(warning, "); using state-000001, written "), "%s", warning);
    cr_assert(strstr(warning, " s earlier: progress after it will be redone"), "%s", warning);
    mr_checkpoint_state_free(&got);
}

Test(checkpoint, round_trip_keeps_every_field)
{
    char *input =
        mr_test_write(dir, "in/a.jsonl", "{\"custom_id\": \"1\"}\n\n{}\n", (size_t)-1);
    mr_checkpoint_state got;
    mr_checkpoint_fingerprint_free(&s.fingerprint);
    mr_checkpoint_input_shard shards[] = {{7, 0, 18, 1, 2, 0}, {8, 18, 21, 3, 1, 0}};
    mr_checkpoint_input inputs[] = {{.path = input, .shards = shards, .n_shards = 2}};
    cr_assert_eq(mr_checkpoint_fingerprint_make(&s.fingerprint, CHECKPOINT_SAMPLE_JOB,
                                                CHECKPOINT_SAMPLE_CONFIG, inputs, 1, true, err,
                                                sizeof err),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_neq(s.fingerprint.inputs[0].shards[0].xxh3, s.fingerprint.inputs[0].shards[1].xxh3);
    write_ok(3);
    cr_assert_eq(s.generation, 1);
    cr_assert(exists("state-000001.ckpt.zst"));
    cr_assert_eq(load(&got),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_str_eq(warning, "");
    cr_assert_eq(got.generation, 1);
    cr_assert_float_eq(got.written, s.written, 1e-5);
    assert_same_state(&s, &got);
    mr_checkpoint_state_free(&got);
    free(input);
}

Test(checkpoint, an_empty_state_round_trips)
{
    mr_checkpoint_state got;
    mr_checkpoint_state_free(&s);
    cr_assert_eq(mr_checkpoint_state_init(&s, 0, err, sizeof err), MR_CHECKPOINT_OK);
    write_ok(1);
    cr_assert_eq(load(&got),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_null(got.fingerprint.job, "a missing job text stays missing");
    assert_same_state(&s, &got);
    mr_checkpoint_state_free(&got);
}

Test(checkpoint, keeps_the_newest_generations_and_removes_leftovers)
{
    write_ok(3);
    free(mr_test_write(dir, "state-000002.ckpt.zst.tmp", "torn", 4));
    for (int i = 0; i < 4; i++)
        write_ok(3);
    cr_assert_eq(s.generation, 5);
    cr_assert(!exists("state-000001.ckpt.zst") && !exists("state-000002.ckpt.zst"));
    cr_assert(exists("state-000003.ckpt.zst") && exists("state-000005.ckpt.zst"));
    cr_assert(!exists("state-000002.ckpt.zst.tmp"), "leftovers go once a write is durable");
    mr_checkpoint_info *list;
    size_t n;
    cr_assert_eq(mr_checkpoint_list(dir, &list, &n, err, sizeof err), MR_CHECKPOINT_OK, "%s",
                 err);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(list[i].generation, 5 - i, "newest first");
        cr_assert(list[i].good, "%s", list[i].problem);
        cr_assert_gt(list[i].bytes, 56);
    }
    free(list);
}

Test(checkpoint, a_bit_flip_falls_back_to_the_previous_generation)
{
    two_generations();
    poke(2, -1, 0x10, true); /* in the zstd frame's checksum */
    assert_falls_back_to_1("checksum mismatch");
    write_ok(3);
    cr_assert_eq(s.generation, 3, "a damaged generation's number is not reused");
}

/* A flip in bits zstd does not read (reserved bits, padding) changes
 * nothing; every other flip must be seen.  Either way no altered state is
 * ever loaded. */
Test(checkpoint, damage_anywhere_is_found_or_harmless)
{
    two_generations();
    char *path = generation_path(2);
    size_t len, seen = 0;
    free(mr_test_read(path, &len));
    for (size_t at = 0; at < len; at++) {
        poke(2, (long)at, 0x01, true);
        mr_checkpoint_state got;
        cr_assert_eq(load(&got),
                     MR_CHECKPOINT_OK, "byte %zu: %s", at, err);
        if (got.generation == 1) {
            cr_assert(strstr(warning, "state-000002 is damaged ("), "%s", warning);
            seen++;
        } else {
            assert_same_state(&s, &got);
        }
        mr_checkpoint_state_free(&got);
        poke(2, (long)at, 0x01, true);
    }
    cr_assert_gt(seen, len * 99 / 100, "%zu of %zu flips seen", seen, len);
    poke(2, 20, 0x01, true); /* the generation number */
    assert_falls_back_to_1("header checksum mismatch");
    free(path);
}

Test(checkpoint, a_truncated_generation_says_how_much_is_left)
{
    two_generations();
    cut(2, 100);
    assert_falls_back_to_1("truncated to 100 of ");
    cut(2, 30);
    assert_falls_back_to_1("truncated to 30 bytes, shorter than its 56-byte header");
}

Test(checkpoint, a_torn_write_is_skipped)
{
    two_generations();
    /* Power cut: generation 2 renamed but its data never reached the disk,
     * and the write of generation 3 stopped half way. */
    cut(2, 0);
    char *first = generation_path(1);
    size_t len;
    char *half = mr_test_read(first, &len);
    free(mr_test_write(dir, "state-000003.ckpt.zst.tmp", half, len / 2));
    assert_falls_back_to_1("empty: its write was cut off");
    write_ok(3);
    cr_assert_eq(s.generation, 3);
    cr_assert(!exists("state-000003.ckpt.zst.tmp"));
    free(half);
    free(first);
}

static void put32(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Rewrites generation g as a moerun of format `version` would write it,
 * holding `payload` (NULL: its own), every checksum valid. */
static void forge(unsigned g, unsigned char version, const char *payload)
{
    char *path = generation_path(g);
    size_t len, n = payload ? strlen(payload) : 0;
    unsigned char *data = (unsigned char *)mr_test_read(path, &len);
    if (payload) {
        size_t cap = 56 + ZSTD_compressBound(n);
        cr_assert(data = realloc(data, cap));
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
        size_t frame = ZSTD_compress2(cctx, data + 56, cap - 56, payload, n);
        ZSTD_freeCCtx(cctx);
        cr_assert(!ZSTD_isError(frame));
        put32(data + 32, n);
        put32(data + 36, 0);
        put32(data + 40, frame);
        put32(data + 44, 0);
        put32(data + 48, crc32(0, (const Bytef *)payload, (uInt)n));
        len = 56 + frame;
    }
    data[8] = version;
    put32(data + 52, crc32(0, data, 52));
    free(mr_test_write(dir, strrchr(path, '/') + 1, (char *)data, len));
    free(data);
    free(path);
}

Test(checkpoint, another_format_version_is_an_error_naming_both)
{
    mr_checkpoint_state got;
    two_generations();
    forge(2, 7, NULL);
    cr_assert_eq(load(&got), MR_CHECKPOINT_EVERSION);
    char want[256];
    snprintf(want, sizeof want,
             "checkpoint state-000002 was written in format version 7, but this moerun reads "
             "version %d",
             MR_CHECKPOINT_VERSION);
    cr_assert(strstr(err, want), "%s", err);
    mr_checkpoint_info *list;
    size_t n;
    cr_assert_eq(mr_checkpoint_list(dir, &list, &n, err, sizeof err), MR_CHECKPOINT_OK);
    cr_assert(!list[0].good && list[1].good);
    snprintf(want, sizeof want, "format version 7; this moerun reads version %d",
             MR_CHECKPOINT_VERSION);
    cr_assert_str_eq(list[0].problem, want);
    free(list);
}

Test(checkpoint, sound_but_invalid_content_names_the_key)
{
    two_generations();
    forge(2, MR_CHECKPOINT_VERSION, "{\"created\": 1}");
    assert_falls_back_to_1("invalid content: fingerprint is missing or not an object");
    forge(2, MR_CHECKPOINT_VERSION, "{\"created\": 1.5}");
    assert_falls_back_to_1("invalid content: created is not a whole number within ±2^53");
    forge(2, MR_CHECKPOINT_VERSION,
          "{\"created\": 1, \"fingerprint\": {\"job\": null, \"model_config\": null, "
          "\"inputs\": [{\"path\": \"a\", \"compressed\": false, \"size\": 3, "
          "\"xxh3\": \"00000000000000ff\", \"shards\": [{\"id\": 0, \"begin\": 0, "
          "\"end\": 3, \"first_line\": 1, \"lines\": 1, \"xxh3\": \"ff\"}]}]}}");
    assert_falls_back_to_1(
        "invalid content: inputs[0].shards[0].xxh3 is not a string of 16 hexadecimal digits");
    forge(2, MR_CHECKPOINT_VERSION, "[1, 2]");
    assert_falls_back_to_1("invalid content: the payload is not a JSON object");
}

/* Generation 2's payload with the first `from` replaced by `to`. */
static void forge_edit(const char *from, const char *to)
{
    char *path = generation_path(2);
    size_t len;
    char *data = mr_test_read(path, &len);
    unsigned long long n = ZSTD_getFrameContentSize(data + 56, len - 56);
    char *json = calloc(n + 1, 1), *edited = NULL;
    cr_assert(json && ZSTD_decompress(json, n, data + 56, len - 56) == n);
    char *at = strstr(json, from);
    cr_assert(at, "no %s in the payload", from);
    cr_assert(asprintf(&edited, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from)) > 0);
    forge(2, MR_CHECKPOINT_VERSION, edited);
    free(edited);
    free(json);
    free(data);
    free(path);
}

Test(checkpoint, lines_in_flight_out_of_order_or_range_are_refused)
{
    /* Shard 1 has read up to line 1001 and has line 998 in flight, with no
     * token yet. */
    cr_assert_eq(s.shards[1].n_in_flight, 1);
    cr_assert_eq(s.shards[1].in_flight[0].line, 998);
    two_generations();
    forge_edit("\"in_flight\":[{\"line\":998,", "\"in_flight\":[{\"line\":1002,");
    assert_falls_back_to_1("invalid content: shards[1].in_flight[0] (line 1002, choice 0) is not "
                           "after the entry before it, or its line is not below the shard's "
                           "next_line 1002");
    forge_edit("\"in_flight\":[{\"line\":1002,\"tokens\":[]",
               "\"in_flight\":[{\"line\":998,\"tokens\":[-1]");
    assert_falls_back_to_1("invalid content: shards[1].in_flight[0].tokens[0] is not a token id "
                           "from 0 to 2147483647");
}

Test(checkpoint, no_good_generation_is_an_error_listing_each)
{
    mr_checkpoint_state got;
    two_generations();
    poke(2, -1, 0x10, true);
    cut(1, 0);
    cr_assert_eq(load(&got),
                 MR_CHECKPOINT_EINVAL);
    char want[1024];
    snprintf(want, sizeof want,
             "no usable checkpoint in %s: state-000002 is damaged (checksum mismatch in the "
             "zstd frame); state-000001 is damaged (empty: its write was cut off)",
             dir);
    cr_assert_str_eq(err, want);
}

Test(checkpoint, several_damaged_generations_are_all_named)
{
    mr_checkpoint_state got;
    two_generations();
    write_ok(3);
    cut(3, 0);
    cut(2, 0);
    cr_assert_eq(load(&got),
                 MR_CHECKPOINT_OK, "%s", err);
    cr_assert_eq(got.generation, 1);
    cr_assert(strstr(warning, "checkpoint state-000003 is damaged (empty: its write was cut "
                              "off); checkpoint state-000002 is damaged (empty: its write was "
                              "cut off); using state-000001, written "),
              "%s", warning);
    cr_assert(strstr(warning, " s before state-000003: progress after it will be redone"), "%s",
              warning);
    mr_checkpoint_state_free(&got);
}

Test(checkpoint, a_missing_folder_has_no_checkpoint)
{
    char *none = NULL;
    cr_assert(asprintf(&none, "%s/checkpoint", dir) > 0);
    mr_checkpoint_state got;
    cr_assert_eq(mr_checkpoint_load_latest(none, &got, warning, sizeof warning, err, sizeof err),
                 MR_CHECKPOINT_ENOENT);
    cr_assert(strstr(err, "no checkpoint in "), "%s", err);
    mr_checkpoint_info *list;
    size_t n;
    cr_assert_eq(mr_checkpoint_list(none, &list, &n, err, sizeof err), MR_CHECKPOINT_OK);
    cr_assert_eq(n, 0);
    free(none);
}

Test(checkpoint, impossible_values_are_refused)
{
    static const int32_t outside[] = {0, 1, 5, 2};
    cr_assert_eq(mr_checkpoint_set_placement(&s, 1, 3, 4, 2, outside, err, sizeof err),
                 MR_CHECKPOINT_EINVAL);
    cr_assert_str_eq(err, "placement: layer 0 slot 2 holds expert 5, not one of 0..2");
    cr_assert_eq(mr_checkpoint_set_placement(&s, 1, 3, 5, 2, outside, err, sizeof err),
                 MR_CHECKPOINT_EINVAL);
    cr_assert(strstr(err, "in 5 slots over 2 ranks is impossible"), "%s", err);
    cr_assert_eq(s.placement.n_layers, 3, "a refused placement leaves the old one");
    s.counters.tokens_in = (1ULL << 53) + 1; /* the nearest double is 2^53 */
    cr_assert_eq(mr_checkpoint_write(dir, &s, 3, err, sizeof err), MR_CHECKPOINT_EINVAL);
    cr_assert_str_eq(err, "counters.tokens_in is not a whole number from 0 to 2^53, so a "
                          "checkpoint cannot hold it");
    cr_assert_eq(mr_checkpoint_write(dir, &s, 0, err, sizeof err), MR_CHECKPOINT_EINVAL);
    cr_assert(strstr(err, "at least 1 generation must be kept"), "%s", err);
}

/* ------------------------------------------------------------------------
 * Fingerprints
 * ------------------------------------------------------------------------ */
static void fingerprint(mr_checkpoint_fingerprint *fp, const char *job, const char *config,
                        const mr_checkpoint_input *inputs, size_t n)
{
    cr_assert_eq(mr_checkpoint_fingerprint_make(fp, job, config, inputs, n, true, err,
                                                sizeof err),
                 MR_CHECKPOINT_OK, "%s", err);
}

/* A file of `len` bytes of a repeating pattern, with byte `at` set to x. */
static char *pattern_file(const char *name, size_t len, size_t at, char x)
{
    char *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)('a' + i % 23);
    if (at < len)
        data[at] = x;
    char *path = mr_test_write(dir, name, data, len);
    free(data);
    return path;
}

Test(checkpoint, fingerprint_diff_names_what_changed)
{
    char *a = pattern_file("a.jsonl", 1234, (size_t)-1, 0);
    char *b = pattern_file("b.jsonl", 300000, (size_t)-1, 0);
    /* b is one line, one shard; a has no shard */
    mr_checkpoint_input_shard whole[] = {{0, 0, 300000, 1, 1, 0}};
    mr_checkpoint_input inputs[] = {{.path = a}, {.path = b, .shards = whole, .n_shards = 1}};
    mr_checkpoint_fingerprint then, now;
    fingerprint(&then, CHECKPOINT_SAMPLE_JOB, CHECKPOINT_SAMPLE_CONFIG, inputs, 2);
    fingerprint(&now, CHECKPOINT_SAMPLE_JOB,
                "{\"num_experts\":128,\"hidden_size\":2048,\n  \"model_type\":\"qwen3_moe\","
                "\"num_experts_per_tok\":8}",
                inputs, 2);
    char what[2048];
    cr_assert_eq(mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what), 0, "%s", what);
    cr_assert_str_eq(what, "", "reformatting config.json changes nothing");
    mr_checkpoint_fingerprint_free(&now);

    free(pattern_file("a.jsonl", 1300, (size_t)-1, 0));
    free(pattern_file("b.jsonl", 300000, 299000, '!'));
    char *job = strdup(CHECKPOINT_SAMPLE_JOB);
    memcpy(strstr(job, "= 256"), "= 512", 5);
    fingerprint(&now, job,
                "{\"model_type\": \"qwen3_moe\", \"num_experts\": 64, "
                "\"num_experts_per_tok\": 8, \"hidden_size\": 2048}",
                inputs, 2);
    cr_assert_eq(mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what), 4, "%s", what);
    char want[2048];
    snprintf(want, sizeof want,
             "job key [engine] max_batch_tokens changed 256 → 512\n"
             "model config key num_experts changed 128 → 64\n"
             "input %s changed size 1234 → 1300\n"
             "input %s changed in shard 0 (line 1)",
             a, b);
    cr_assert_str_eq(what, want);
    mr_checkpoint_fingerprint_free(&now);

    free(pattern_file("b.jsonl", 300000, 10, '!'));
    fingerprint(&now, CHECKPOINT_SAMPLE_JOB, CHECKPOINT_SAMPLE_CONFIG, inputs + 1, 1);
    mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what);
    snprintf(want, sizeof want, "input %s changed in shard 0 (line 1)\ninput %s is gone", b, a);
    cr_assert_str_eq(what, want);
    mr_checkpoint_fingerprint_free(&now);

    mr_checkpoint_input swapped[] = {inputs[1], inputs[0]};
    free(pattern_file("a.jsonl", 1234, (size_t)-1, 0));
    free(pattern_file("b.jsonl", 300000, (size_t)-1, 0));
    fingerprint(&now, "[job]\nname = sample\n\n[engine]\nmax_batch_tokens = 256\nthreads = "
                      "0\nbackend = ref\n\n[generation]\nstop = [\"\\n\\n\"]\n",
                CHECKPOINT_SAMPLE_CONFIG, swapped, 2);
    cr_assert_eq(mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what), 3, "%s", what);
    snprintf(want, sizeof want,
             "job key [engine] backend is new (ref)\n"
             "job key [job] run_dir was removed (it was /runs/sample)\n"
             "input files are listed in another order (%s is now number 1)",
             b);
    cr_assert_str_eq(what, want);
    cr_assert_eq(mr_checkpoint_fingerprint_diff(&then, &now, what, 20), 3,
                 "a short buffer cuts the text, not the count");
    cr_assert_eq(strlen(what), 19);
    mr_checkpoint_fingerprint_free(&now);

    fingerprint(&now, CHECKPOINT_SAMPLE_JOB, CHECKPOINT_SAMPLE_CONFIG, inputs, 2);
    free(now.inputs[0].path);
    now.inputs[0].path = strdup("/moved/a.jsonl");
    mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what);
    snprintf(want, sizeof want, "input /moved/a.jsonl is new\ninput %s is gone", a);
    cr_assert_str_eq(what, want);
    mr_checkpoint_fingerprint_free(&now);
    mr_checkpoint_fingerprint_free(&then);
    free(job);
    free(a);
    free(b);
}

/* An input of LINES request-like lines of LINE bytes each (300 000 bytes),
 * cut as the plan would into shards of equal line counts. */
#define LINE 100
#define LINES 3000

/* The lines, with lines a and b (1-based; 0: none) swapped; not
 * NUL-terminated. */
static char *lines_text(size_t a, size_t b)
{
    char *text = malloc(LINES * LINE + 1);
    for (size_t i = 1; i <= LINES; i++) {
        size_t n = i == a ? b : i == b ? a : i;
        char *p = text + (i - 1) * LINE;
        int len = snprintf(p, LINE, "{\"custom_id\": \"r-%06zu\", \"body\": \"", n);
        memset(p + len, 'a' + (int)(n % 26), LINE - (size_t)len - 3);
        memcpy(p + LINE - 3, "\"}\n", 3);
    }
    return text;
}

static mr_checkpoint_input plan_input(const char *path, bool compressed, size_t k,
                                      mr_checkpoint_input_shard *shards)
{
    for (size_t j = 0; j < k; j++) {
        uint64_t first = j * LINES / k, last = (j + 1) * LINES / k;
        shards[j] = (mr_checkpoint_input_shard){(uint32_t)j, first * LINE, last * LINE,
                                                first + 1, last - first, 0};
    }
    return (mr_checkpoint_input){.path = (char *)path, .compressed = compressed,
                                 .shards = shards, .n_shards = k};
}

/* How `now` (input text now, hashed or not) differs from `then`; the count. */
static size_t diff_with(const mr_checkpoint_fingerprint *then, const mr_checkpoint_input *in,
                        const char *text, size_t len, bool hash, char *what, size_t whatlen)
{
    free(mr_test_write(dir, "a.jsonl", text, len));
    mr_checkpoint_fingerprint now;
    cr_assert_eq(mr_checkpoint_fingerprint_make(&now, "", NULL, in, 1, hash, err, sizeof err),
                 MR_CHECKPOINT_OK, "%s", err);
    size_t n = mr_checkpoint_fingerprint_diff(then, &now, what, whatlen);
    mr_checkpoint_fingerprint_free(&now);
    return n;
}

Test(checkpoint, fingerprint_hashes_every_byte_and_names_the_changed_shard)
{
    char *text = lines_text(0, 0), what[2048], want[2048];
    char *path = mr_test_write(dir, "a.jsonl", text, LINES * LINE);
    mr_checkpoint_input_shard shards[8];
    mr_checkpoint_input in = plan_input(path, false, 4, shards);
    mr_checkpoint_fingerprint then;
    fingerprint(&then, "", NULL, &in, 1);
    const mr_checkpoint_input *got = &then.inputs[0];
    cr_assert_eq(got->size, LINES * LINE);
    cr_assert_eq(got->xxh3, XXH3_64bits(text, LINES * LINE), "the whole file, as xxhsum -H3");
    for (size_t j = 0; j < 4; j++)
        cr_assert_eq(got->shards[j].xxh3,
                     XXH3_64bits(text + shards[j].begin, shards[j].end - shards[j].begin));

    /* Two lines of one length swapped in the middle, far from both ends. */
    char *swapped = lines_text(1600, 1700);
    cr_assert_eq(diff_with(&then, &in, swapped, LINES * LINE, true, what, sizeof what), 1);
    snprintf(want, sizeof want, "input %s changed in shard 2 (lines 1501–2250)", path);
    cr_assert_str_eq(what, want);
    cr_assert_eq(diff_with(&then, &in, swapped, LINES * LINE, false, what, sizeof what), 0,
                 "without reading the inputs only sizes are compared: %s", what);

    /* Bytes appended past the last shard, or its last line cut off. */
    char *longer = malloc(LINES * LINE + LINE);
    memcpy(longer, text, LINES * LINE);
    memcpy(longer + LINES * LINE, text, LINE);
    cr_assert_eq(diff_with(&then, &in, longer, LINES * LINE + LINE, true, what, sizeof what), 1);
    snprintf(want, sizeof want, "input %s changed size 300000 → 300100", path);
    cr_assert_str_eq(what, want);
    cr_assert_eq(diff_with(&then, &in, text, LINES * LINE - LINE, false, what, sizeof what), 1);
    snprintf(want, sizeof want, "input %s changed size 300000 → 299900", path);
    cr_assert_str_eq(what, want);
    cr_assert_eq(diff_with(&then, &in, text, LINES * LINE - LINE, true, what, sizeof what), 1);
    snprintf(want, sizeof want,
             "input %s changed size 300000 → 299900, first in shard 3 (lines 2251–3000)", path);
    cr_assert_str_eq(what, want);

    /* A byte changed in each of 8 shards: five named, the rest counted. */
    mr_checkpoint_fingerprint_free(&then);
    in = plan_input(path, false, 8, shards);
    free(mr_test_write(dir, "a.jsonl", text, LINES * LINE));
    fingerprint(&then, "", NULL, &in, 1);
    for (size_t j = 0; j < 8; j++)
        longer[shards[j].begin + 50] = '!';
    cr_assert_eq(diff_with(&then, &in, longer, LINES * LINE, true, what, sizeof what), 6);
    cr_assert(strstr(what, "changed in shard 0 (lines 1–375)\n"), "%s", what);
    cr_assert(strstr(what, "changed in shard 4 (lines 1501–1875)\n"), "%s", what);
    snprintf(want, sizeof want, "input %s changed in 3 more shards", path);
    cr_assert(strstr(what, want), "%s", what);
    mr_checkpoint_fingerprint_free(&then);
    free(longer);
    free(swapped);
    free(text);
    free(path);
}

/* The input compressed by `how` (zstd or gzip) into dir/NAME. */
static char *compressed_file(const char *name, const char *text, size_t len, int how)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    if (how == 'z') {
        size_t cap = ZSTD_compressBound(len);
        char *frame = malloc(cap);
        size_t n = ZSTD_compress(frame, cap, text, len, 3);
        cr_assert(!ZSTD_isError(n));
        free(mr_test_write(dir, name, frame, n));
        free(frame);
    } else {
        gzFile gz = gzopen(path, "wb");
        cr_assert(gz && gzwrite(gz, text, (unsigned)len) == (int)len);
        cr_assert_eq(gzclose(gz), Z_OK);
    }
    return path;
}

Test(checkpoint, fingerprint_of_a_compressed_input_hashes_its_shards_decompressed)
{
    char *text = lines_text(0, 0), *swapped = lines_text(1600, 1700), what[2048], want[2048];
    char *plain = mr_test_write(dir, "plain.jsonl", text, LINES * LINE);
    mr_checkpoint_input_shard plain_shards[4], packed_shards[4];
    mr_checkpoint_input in[2] = {plan_input(plain, false, 4, plain_shards)};
    for (int how = 'g'; how; how = how == 'g' ? 'z' : 0) {
        char *path = compressed_file("a.jsonl.c", text, LINES * LINE, how);
        in[1] = plan_input(path, true, 4, packed_shards);
        mr_checkpoint_fingerprint then, now;
        fingerprint(&then, "", NULL, in, 2);
        size_t len;
        char *stored = mr_test_read(path, &len);
        const mr_checkpoint_input *p = &then.inputs[0], *c = &then.inputs[1];
        cr_assert_eq(c->size, len);
        cr_assert_eq(c->xxh3, XXH3_64bits(stored, len), "the file as stored");
        for (size_t j = 0; j < 4; j++)
            cr_assert_eq(c->shards[j].xxh3, p->shards[j].xxh3, "shard %zu: the lines", j);
        free(stored);

        free(compressed_file("a.jsonl.c", swapped, LINES * LINE, how));
        fingerprint(&now, "", NULL, in, 2);
        cr_assert_eq(mr_checkpoint_fingerprint_diff(&then, &now, what, sizeof what), 1, "%s",
                     what);
        snprintf(want, sizeof want, "shard 2 (lines 1501–2250)");
        cr_assert(strstr(what, path) && strstr(what, want), "%s", what);
        mr_checkpoint_fingerprint_free(&now);
        mr_checkpoint_fingerprint_free(&then);
        free(path);
    }
    free(plain);
    free(swapped);
    free(text);
}

Test(checkpoint, fingerprint_shards_follow_each_other_and_are_compared_as_cut)
{
    char *text = lines_text(0, 0), what[1024], want[1024];
    char *path = mr_test_write(dir, "a.jsonl", text, LINES * LINE);
    mr_checkpoint_input_shard shards[4];
    mr_checkpoint_input in = plan_input(path, false, 4, shards);
    mr_checkpoint_fingerprint then, now;
    shards[2].begin -= 10;
    cr_assert_eq(mr_checkpoint_fingerprint_make(&now, "", NULL, &in, 1, true, err, sizeof err),
                 MR_CHECKPOINT_EINVAL);
    snprintf(want, sizeof want,
             "input %s: shard 2's bytes 149990–225000 are not after those of the shard before "
             "it",
             path);
    cr_assert_str_eq(err, want);
    /* The last line in no shard: a change there is still a change. */
    in.n_shards = 3;
    shards[2].begin += 10;
    fingerprint(&then, "", NULL, &in, 1);
    text[LINES * LINE - 10] = '!';
    cr_assert_eq(diff_with(&then, &in, text, LINES * LINE, true, what, sizeof what), 1);
    snprintf(want, sizeof want, "input %s changed outside the bytes of its shards", path);
    cr_assert_str_eq(what, want);
    in.n_shards = 4;
    cr_assert_eq(diff_with(&then, &in, text, LINES * LINE, true, what, sizeof what), 1);
    snprintf(want, sizeof want, "input %s is cut into other shards than the checkpoint's", path);
    cr_assert_str_eq(what, want);
    mr_checkpoint_fingerprint_free(&then);
    free(text);
    free(path);
}

Test(checkpoint, fingerprint_of_a_missing_input_says_which)
{
    mr_checkpoint_fingerprint fp;
    mr_checkpoint_input in = {.path = "/nonexistent/in.jsonl"};
    for (int hash = 0; hash < 2; hash++) {
        cr_assert_eq(mr_checkpoint_fingerprint_make(&fp, "", NULL, &in, 1, hash, err, sizeof err),
                     MR_CHECKPOINT_EIO);
        cr_assert_str_eq(err,
                         "cannot open input /nonexistent/in.jsonl: No such file or directory");
    }
}
