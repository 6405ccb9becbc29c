/*
 * Fuzz target: chat templates (template/): any bytes as a template's
 * source, compiled and, when it compiles, rendered with a fixed chat.  A
 * template comes from a model folder, which may come from anywhere: no
 * source may crash, hang or leak, and every refusal says what.
 */
#include <stdlib.h>
#include <string.h>

#include "template/template.h"
#include "tests/fuzz/fuzz.h"

static cJSON *vars;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    vars = cJSON_Parse("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                       "{\"role\": \"user\", \"content\": \"Hi \\u00e9 \\ud83d\\ude00\"}, "
                       "{\"role\": \"assistant\", \"content\": \"<think>\\nx\\n</think>\\n\\nHello\"}], "
                       "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", "
                       "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                       "\"parameters\": {\"type\": \"object\", \"properties\": {\"a\": "
                       "{\"type\": \"number\"}}}}}], \"n\": 3, \"pi\": 3.5, \"nothing\": null}");
    mr_fuzz_check(vars != NULL, "out of memory");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *source = malloc(size + 1);
    mr_fuzz_check(source != NULL, "out of memory");
    memcpy(source, data, size);
    source[size] = '\0';
    char err[1024] = "";
    mr_template *t = NULL;
    int rc = mr_template_compile(source, &t, err, sizeof err);
    free(source);
    if (rc != MR_TEMPLATE_OK) {
        mr_fuzz_check(rc == MR_TEMPLATE_EINVAL && !strncmp(err, "line ", 5),
                      "a refused template says where");
        return 0;
    }
    char *out = NULL;
    size_t len = 0;
    mr_template_options opt = {.now = 1721952000};
    rc = mr_template_render(t, vars, &opt, &out, &len, err, sizeof err);
    mr_fuzz_check(rc == MR_TEMPLATE_OK ? out != NULL && out[len] == '\0'
                                       : out == NULL && (rc == MR_TEMPLATE_ERAISE || err[0]),
                  "a rendering gives text, or says why not");
    free(out);
    mr_template_free(t);
    return 0;
}
