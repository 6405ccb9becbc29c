/*
 * Request lines: the OpenAI Batch format and the plain prompt format.  The
 * checks follow what users bring from the OpenAI API, vLLM and SGLang: a
 * parameter moerun would silently ignore but that changes the output
 * (tools, logit_bias, a response format) is refused by name rather than
 * dropped.
 */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jobs/internal.h"

#define MAX_STOP 64

struct mr_request_parser {
    const mr_job *job;
    cJSON *root;            /* the last line's tree: requests point into it */
    mr_chat_message *messages;
    size_t messages_cap;
    const char **stop;      /* strings point into root or the job */
    mr_buf text;            /* joined content parts and numeric ids */
    mr_prompt *prompts;     /* [MR_MAX_PROMPTS] */
    mr_buf ids;             /* token-id prompts, int32_t each */
    char *kwargs;           /* chat_template_kwargs printed */
    /* the line being parsed, for messages */
    const char *file;
    uint64_t line_no;
    mr_request_error *error;
};

mr_request_parser *mr_request_parser_new(const mr_job *job)
{
    mr_request_parser *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->job = job;
    p->stop = calloc(MAX_STOP, sizeof *p->stop);
    p->prompts = calloc(MR_MAX_PROMPTS, sizeof *p->prompts);
    if (!p->stop || !p->prompts) {
        mr_request_parser_free(p);
        return NULL;
    }
    return p;
}

void mr_request_parser_free(mr_request_parser *p)
{
    if (!p)
        return;
    cJSON_Delete(p->root);
    free(p->messages);
    free(p->stop);
    free(p->prompts);
    mr_buf_free(&p->text);
    mr_buf_free(&p->ids);
    cJSON_free(p->kwargs);
    free(p);
}

static void set_error(mr_request_error *error, const char *code, const char *file,
                      uint64_t line_no, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static void set_error(mr_request_error *error, const char *code, const char *file,
                      uint64_t line_no, const char *fmt, va_list ap)
{
    snprintf(error->code, sizeof error->code, "%s", code);
    int n = snprintf(error->message, sizeof error->message, "%s:%llu: ", file,
                     (unsigned long long)line_no);
    if (n >= 0 && (size_t)n < sizeof error->message)
        vsnprintf(error->message + n, sizeof error->message - (size_t)n, fmt, ap);
}

static int fail(mr_request_parser *p, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(mr_request_parser *p, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(p->error, code, p->file, p->line_no, fmt, ap);
    va_end(ap);
    return MR_JOBS_EINVAL;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    return "an object";
}

static const cJSON *field(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

static int get_string(mr_request_parser *p, const cJSON *obj, const char *where,
                      const char *name, bool required, const char **out)
{
    const cJSON *v = field(obj, name);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return required ? fail(p, "missing_field", "%s%s is missing", where, name)
                        : MR_JOBS_OK;
    if (!cJSON_IsString(v))
        return fail(p, "wrong_type", "%s%s must be a string, got %s", where, name,
                    type_name(v));
    *out = v->valuestring;
    return MR_JOBS_OK;
}

/* Whole numbers up to 2^53 only: JSON numbers arrive as doubles. */
static int get_integer(mr_request_parser *p, const cJSON *obj, const char *where,
                       const char *name, double min, double max, int64_t *out, bool *given)
{
    const cJSON *v = field(obj, name);
    *given = v && !cJSON_IsNull(v);
    if (!*given)
        return MR_JOBS_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return fail(p, "wrong_type", "%s%s must be a whole number, got %s", where, name,
                    cJSON_IsNumber(v) ? "a fraction" : type_name(v));
    if (v->valuedouble < min || v->valuedouble > max)
        return fail(p, "invalid_value", "%s%s must be from %.0f to %.0f, got %.0f", where,
                    name, min, max, v->valuedouble);
    *out = (int64_t)v->valuedouble;
    return MR_JOBS_OK;
}

static int get_real(mr_request_parser *p, const cJSON *obj, const char *where,
                    const char *name, double min, double max, double *out)
{
    const cJSON *v = field(obj, name);
    if (!v || cJSON_IsNull(v))
        return MR_JOBS_OK;
    if (!cJSON_IsNumber(v))
        return fail(p, "wrong_type", "%s%s must be a number, got %s", where, name,
                    type_name(v));
    if (v->valuedouble < min || v->valuedouble > max)
        return fail(p, "invalid_value", "%s%s must be from %g to %g, got %g", where, name,
                    min, max, v->valuedouble);
    *out = v->valuedouble;
    return MR_JOBS_OK;
}

static int get_stop(mr_request_parser *p, const cJSON *obj, const char *where,
                    mr_strlist *stop)
{
    const cJSON *v = field(obj, "stop");
    if (!v || cJSON_IsNull(v))
        return MR_JOBS_OK;
    stop->items = (char **)p->stop;
    stop->count = 0;
    if (cJSON_IsString(v)) {
        p->stop[stop->count++] = v->valuestring;
        return MR_JOBS_OK;
    }
    if (!cJSON_IsArray(v))
        return fail(p, "wrong_type", "%sstop must be a string or an array of strings, got %s",
                    where, type_name(v));
    const cJSON *item;
    cJSON_ArrayForEach(item, v)
    {
        if (!cJSON_IsString(item))
            return fail(p, "wrong_type", "%sstop[%zu] must be a string, got %s", where,
                        stop->count, type_name(item));
        if (stop->count == MAX_STOP)
            return fail(p, "invalid_value", "%sstop has more than %d strings", where,
                        MAX_STOP);
        p->stop[stop->count++] = item->valuestring;
    }
    return MR_JOBS_OK;
}

/* Parameters that would change the output if ignored: refused unless they
 * hold their neutral value. */
static int refuse_unsupported(mr_request_parser *p, const cJSON *obj, const char *where)
{
    static const char *const truthy[] = {"stream", "tools", "functions", "logit_bias",
                                         "suffix", "tool_choice", "function_call"};
    for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++) {
        const cJSON *v = field(obj, truthy[i]);
        bool neutral = !v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
                       (cJSON_IsNumber(v) && v->valuedouble == 0) ||
                       ((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child) ||
                       (cJSON_IsString(v) && (!*v->valuestring ||
                                              !strcmp(v->valuestring, "none")));
        if (!neutral)
            return fail(p, "unsupported_parameter", "%s%s is not supported by moerun", where,
                        truthy[i]);
    }
    /* vLLM's sampling extensions, each with its neutral value */
    static const struct {
        const char *name;
        double neutral;
    } extensions[] = {{"repetition_penalty", 1}, {"min_p", 0}, {"min_tokens", 0}};
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++) {
        const cJSON *v = field(obj, extensions[i].name);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == extensions[i].neutral))
            return fail(p, "unsupported_parameter", "%s%s is not supported by moerun; remove it "
                        "or set it to %g", where, extensions[i].name, extensions[i].neutral);
    }
    const cJSON *format = field(obj, "response_format");
    const cJSON *type = field(format, "type");
    if (format && !cJSON_IsNull(format) &&
        !(cJSON_IsString(type) && !strcmp(type->valuestring, "text")))
        return fail(p, "unsupported_parameter",
                    "%sresponse_format other than {\"type\": \"text\"} is not supported", where);
    const cJSON *best_of = field(obj, "best_of");
    if (best_of && !cJSON_IsNull(best_of) &&
        !(cJSON_IsNumber(best_of) && best_of->valuedouble == 1))
        return fail(p, "unsupported_parameter", "%sbest_of must be 1", where);
    return MR_JOBS_OK;
}

/* The job's [generation] defaults, then the request's own values. */
static int get_sampling(mr_request_parser *p, const cJSON *obj, const char *where,
                        const char *custom_id, mr_sampling *s)
{
    const mr_job *job = p->job;
    *s = (mr_sampling){
        .max_tokens = job->generation_max_tokens,
        .temperature = job->generation_temperature,
        .top_p = job->generation_top_p,
        .top_k = job->generation_top_k,
        .stop = job->generation_stop,
    };
    int64_t v = 0;
    bool given;
    int rc = refuse_unsupported(p, obj, where);
    if (!rc)
        rc = get_integer(p, obj, where, "max_tokens", 1, 1 << 30, &s->max_tokens, &given);
    if (!rc)
        rc = get_integer(p, obj, where, "max_completion_tokens", 1, 1 << 30, &s->max_tokens,
                         &given);
    if (!rc)
        rc = get_real(p, obj, where, "temperature", 0, 2, &s->temperature);
    if (!rc)
        rc = get_real(p, obj, where, "top_p", 0, 1, &s->top_p);
    if (!rc && s->top_p == 0)
        rc = fail(p, "invalid_value", "%stop_p must be above 0", where);
    if (!rc)
        rc = get_integer(p, obj, where, "top_k", -1, 1 << 30, &v, &given);
    if (!rc && given)
        s->top_k = v < 0 ? 0 : v; /* vLLM spells "off" as -1 */
    if (!rc)
        rc = get_integer(p, obj, where, "seed", -9007199254740992.0, 9007199254740992.0, &v,
                         &given);
    if (!rc)
        s->seed = given ? (uint64_t)v
                        : mr_hash64(custom_id, strlen(custom_id),
                                    (uint64_t)job->generation_seed);
    if (!rc)
        rc = get_stop(p, obj, where, &s->stop);
    if (!rc)
        rc = get_real(p, obj, where, "presence_penalty", -2, 2, &s->presence_penalty);
    if (!rc)
        rc = get_real(p, obj, where, "frequency_penalty", -2, 2, &s->frequency_penalty);
    return rc;
}

static int get_bool(mr_request_parser *p, const cJSON *obj, const char *where,
                    const char *name, bool *out)
{
    const cJSON *v = field(obj, name);
    if (!v || cJSON_IsNull(v))
        return MR_JOBS_OK;
    if (!cJSON_IsBool(v))
        return fail(p, "wrong_type", "%s%s must be true or false, got %s", where, name,
                    type_name(v));
    *out = cJSON_IsTrue(v);
    return MR_JOBS_OK;
}

/* n, and log-probabilities in the endpoint's shape: chat's logprobs
 * (true/false) and top_logprobs, completions' logprobs N and echo. */
static int get_choices(mr_request_parser *p, const cJSON *obj, const char *where,
                       mr_request *req)
{
    int64_t v = 0;
    bool given;
    req->n = 1;
    int rc = get_integer(p, obj, where, "n", 1, MR_MAX_CHOICES, &req->n, &given);
    if (!rc && req->endpoint == MR_ENDPOINT_CHAT) {
        rc = get_bool(p, obj, where, "logprobs", &req->logprobs);
        if (!rc)
            rc = get_integer(p, obj, where, "top_logprobs", 0, 20, &v, &given);
        if (!rc && given && !req->logprobs)
            rc = fail(p, "invalid_value", "%stop_logprobs needs logprobs: true", where);
        const cJSON *echo = field(obj, "echo");
        if (!rc && echo && !cJSON_IsNull(echo) && !cJSON_IsFalse(echo))
            rc = fail(p, "unsupported_parameter", "%secho is for /v1/completions; chat "
                      "completions do not echo", where);
    } else if (!rc) {
        rc = get_integer(p, obj, where, "logprobs", 0, 20, &v, &req->logprobs);
        if (!rc)
            rc = get_bool(p, obj, where, "echo", &req->echo);
    }
    req->top_logprobs = (int)v;
    return rc;
}

/* Chat content is a string or a list of {"type": "text", "text": ...}
 * parts, joined into one string in p->text; *offset says where. */
static int get_content(mr_request_parser *p, const cJSON *msg, size_t i, size_t *offset,
                       bool *joined, const char **content)
{
    const cJSON *v = field(msg, "content");
    *joined = false;
    if (cJSON_IsString(v)) {
        *content = v->valuestring;
        return MR_JOBS_OK;
    }
    if (!cJSON_IsArray(v))
        return fail(p, v ? "wrong_type" : "missing_field",
                    "body.messages[%zu].content must be a string or an array of text parts%s%s",
                    i, v ? ", got " : "", v ? type_name(v) : "");
    *offset = p->text.len;
    *joined = true;
    size_t k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, v)
    {
        const cJSON *type = field(part, "type"), *text = field(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return fail(p, "unsupported_parameter",
                        "body.messages[%zu].content[%zu]: only parts of type \"text\" are "
                        "supported", i, k);
        if (!cJSON_IsString(text))
            return fail(p, "wrong_type", "body.messages[%zu].content[%zu].text must be a "
                        "string", i, k);
        if (mr_buf_append(&p->text, text->valuestring, strlen(text->valuestring)))
            return fail(p, "out_of_memory", "out of memory");
        k++;
    }
    return mr_buf_append(&p->text, "", 1) ? fail(p, "out_of_memory", "out of memory")
                                           : MR_JOBS_OK;
}

static int get_messages(mr_request_parser *p, const cJSON *body, mr_request *req)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    const cJSON *messages = field(body, "messages");
    if (!messages)
        return fail(p, "missing_field", "body.messages is missing");
    if (!cJSON_IsArray(messages))
        return fail(p, "wrong_type", "body.messages must be an array, got %s",
                    type_name(messages));
    size_t n = (size_t)cJSON_GetArraySize(messages);
    if (!n)
        return fail(p, "empty_prompt", "body.messages is empty");
    if (n > p->messages_cap) {
        mr_chat_message *m = realloc(p->messages, n * sizeof *m);
        if (!m)
            return fail(p, "out_of_memory", "out of memory");
        p->messages = m;
        p->messages_cap = n;
    }
    /* joined contents move when p->text grows: fix their pointers last */
    size_t *offsets = calloc(n, sizeof *offsets);
    bool *joined = calloc(n, sizeof *joined);
    int rc = offsets && joined ? MR_JOBS_OK : fail(p, "out_of_memory", "out of memory");
    size_t i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, messages)
    {
        if (rc)
            break;
        mr_chat_message *m = &p->messages[i];
        char where[48];
        snprintf(where, sizeof where, "body.messages[%zu].", i);
        if (!cJSON_IsObject(msg))
            rc = fail(p, "wrong_type", "body.messages[%zu] must be an object, got %s", i,
                      type_name(msg));
        if (!rc)
            rc = get_string(p, msg, where, "role", true, &m->role);
        size_t r = 0;
        while (!rc && r < sizeof roles / sizeof roles[0] && strcmp(roles[r], m->role))
            r++;
        if (!rc && r == sizeof roles / sizeof roles[0])
            rc = fail(p, "invalid_value", "%srole must be system, developer, user, assistant "
                      "or tool, got '%s'", where, m->role);
        if (!rc)
            rc = get_content(p, msg, i, &offsets[i], &joined[i], &m->content);
        i++;
    }
    for (size_t k = 0; !rc && k < n; k++)
        if (joined[k])
            p->messages[k].content = p->text.data + offsets[k];
    free(offsets);
    free(joined);
    req->messages = p->messages;
    req->n_messages = n;
    return rc;
}

/* An array of token ids: whole numbers from 0 to 2^31 - 1 (the engine
 * checks them against the vocabulary), appended to p->ids. */
static int get_ids(mr_request_parser *p, const cJSON *array, const char *where,
                   const char *name)
{
    size_t k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
            item->valuedouble < 0 || item->valuedouble > 2147483647.0)
            return fail(p, cJSON_IsNumber(item) ? "invalid_value" : "wrong_type",
                        "%s%s[%zu] must be a token id (a whole number from 0), got %s", where,
                        name, k, cJSON_IsNumber(item) ? "another number" : type_name(item));
        int32_t id = (int32_t)item->valuedouble;
        if (mr_buf_append(&p->ids, &id, sizeof id))
            return fail(p, "out_of_memory", "out of memory");
        k++;
    }
    return MR_JOBS_OK;
}

/* The OpenAI completions prompt: a string, token ids, or a list of
 * either (each list item one prompt). */
static int get_prompt(mr_request_parser *p, const cJSON *obj, const char *where,
                      mr_request *req)
{
    const cJSON *v = field(obj, "prompt");
    if (!v)
        return fail(p, "missing_field", "%sprompt is missing", where);
    if (!cJSON_IsString(v) && !cJSON_IsArray(v))
        return fail(p, "wrong_type", "%sprompt must be a string, token ids or a list of "
                    "them, got %s", where, type_name(v));
    bool ids = cJSON_IsArray(v) && cJSON_IsNumber(v->child);
    const cJSON *one = cJSON_IsArray(v) && !ids ? v->child : v;
    size_t n = cJSON_IsArray(v) && !ids ? (size_t)cJSON_GetArraySize(v) : 1;
    if (n > MR_MAX_PROMPTS)
        return fail(p, "invalid_value", "%sprompt lists %zu prompts, more than %d", where, n,
                    MR_MAX_PROMPTS);
    p->ids.len = 0;
    /* where each prompt's ids start: appending may move p->ids */
    size_t starts[MR_MAX_PROMPTS];
    for (size_t i = 0; i < n; i++, one = one->next) {
        char name[32];
        snprintf(name, sizeof name, n > 1 || one != v ? "prompt[%zu]" : "prompt", i);
        starts[i] = p->ids.len / sizeof(int32_t);
        if (cJSON_IsString(one)) {
            p->prompts[i] = (mr_prompt){.text = one->valuestring};
            if (!*one->valuestring)
                return fail(p, "empty_prompt", "%s%s is empty", where, name);
            continue;
        }
        if (!cJSON_IsArray(one))
            return fail(p, "wrong_type", "%s%s must be a string or token ids, got %s", where,
                        name, type_name(one));
        int rc = get_ids(p, one, where, name);
        if (rc)
            return rc;
        p->prompts[i] = (mr_prompt){.n_ids = p->ids.len / sizeof(int32_t) - starts[i]};
        if (!p->prompts[i].n_ids)
            return fail(p, "empty_prompt", "%s%s is empty", where, name);
    }
    if (n == 0)
        return fail(p, "empty_prompt", "%sprompt is an empty list", where);
    for (size_t i = 0; i < n; i++)
        if (!p->prompts[i].text)
            p->prompts[i].ids = (const int32_t *)p->ids.data + starts[i];
    req->prompts = p->prompts;
    req->n_prompts = n;
    return MR_JOBS_OK;
}

/* vLLM's chat_template_kwargs: an object whose members become variables of
 * the chat template (e.g. {"enable_thinking": false}). */
static int get_kwargs(mr_request_parser *p, const cJSON *body, mr_request *req)
{
    const cJSON *v = field(body, "chat_template_kwargs");
    if (!v || cJSON_IsNull(v))
        return MR_JOBS_OK;
    if (!cJSON_IsObject(v))
        return fail(p, "wrong_type", "body.chat_template_kwargs must be an object, got %s",
                    type_name(v));
    if (!(p->kwargs = cJSON_PrintUnformatted(v)))
        return fail(p, "out_of_memory", "out of memory");
    req->chat_template_kwargs = p->kwargs;
    return MR_JOBS_OK;
}

static int parse_openai(mr_request_parser *p, const cJSON *root, mr_request *req)
{
    const char *method, *url;
    int rc = get_string(p, root, "", "custom_id", true, &req->custom_id);
    if (!rc && !*req->custom_id)
        rc = fail(p, "invalid_value", "custom_id is empty");
    if (!rc)
        p->error->custom_id = req->custom_id;
    if (!rc)
        rc = get_string(p, root, "", "method", true, &method);
    if (!rc && strcmp(method, "POST") != 0)
        rc = fail(p, "unsupported_method", "method must be POST, got '%s'", method);
    if (!rc)
        rc = get_string(p, root, "", "url", true, &url);
    if (!rc) {
        if (!strcmp(url, "/v1/completions"))
            req->endpoint = MR_ENDPOINT_COMPLETIONS;
        else if (!strcmp(url, "/v1/chat/completions"))
            req->endpoint = MR_ENDPOINT_CHAT;
        else
            rc = fail(p, "unsupported_url", "url must be /v1/completions or "
                      "/v1/chat/completions, got '%s'", url);
    }
    const cJSON *body = field(root, "body");
    if (!rc && !body)
        rc = fail(p, "missing_field", "body is missing");
    if (!rc && !cJSON_IsObject(body))
        rc = fail(p, "wrong_type", "body must be an object, got %s", type_name(body));
    if (!rc)
        rc = get_string(p, body, "body.", "model", false, &req->model);
    if (!rc)
        rc = req->endpoint == MR_ENDPOINT_CHAT ? get_messages(p, body, req)
                                               : get_prompt(p, body, "body.", req);
    if (!rc && req->endpoint == MR_ENDPOINT_CHAT)
        rc = get_kwargs(p, body, req);
    if (!rc)
        rc = get_sampling(p, body, "body.", req->custom_id, &req->sampling);
    if (!rc)
        rc = get_choices(p, body, "body.", req);
    return rc;
}

/* {"id": "..." or a number, "prompt": "...", sampling fields alongside}. */
static int parse_prompt_format(mr_request_parser *p, const cJSON *root, mr_request *req)
{
    const cJSON *id = field(root, "id");
    if (!id || cJSON_IsNull(id))
        return fail(p, "missing_field", "id is missing");
    if (cJSON_IsNumber(id)) {
        char num[32];
        if (id->valuedouble == floor(id->valuedouble) && fabs(id->valuedouble) < 9.2e18)
            snprintf(num, sizeof num, "%lld", (long long)id->valuedouble);
        else
            snprintf(num, sizeof num, "%.17g", id->valuedouble);
        if (mr_buf_append(&p->text, num, strlen(num) + 1))
            return fail(p, "out_of_memory", "out of memory");
        req->custom_id = p->text.data;
    } else if (cJSON_IsString(id) && *id->valuestring) {
        req->custom_id = id->valuestring;
    } else {
        return fail(p, cJSON_IsString(id) ? "invalid_value" : "wrong_type",
                    "id must be a non-empty string or a number, got %s",
                    cJSON_IsString(id) ? "an empty string" : type_name(id));
    }
    p->error->custom_id = req->custom_id;
    req->endpoint = MR_ENDPOINT_COMPLETIONS;
    int rc = get_string(p, root, "", "model", false, &req->model);
    if (!rc)
        rc = get_prompt(p, root, "", req);
    if (!rc)
        rc = get_sampling(p, root, "", req->custom_id, &req->sampling);
    if (!rc)
        rc = get_choices(p, root, "", req);
    return rc;
}

/* cJSON decodes \u0000 into a NUL that ends the C string it makes, which
 * would cut a prompt short without a word.  The escape is real when an odd
 * number of backslashes stands before "u0000". */
static const char *find_nul_escape(const char *line, size_t len)
{
    const char *end = line + len;
    for (const char *s = line; (s = memmem(s, (size_t)(end - s), "\\u0000", 6)); s += 6) {
        size_t at = (size_t)(s - line), slashes = 1;
        while (slashes <= at && line[at - slashes] == '\\')
            slashes++;
        if (slashes % 2 == 1)
            return s;
    }
    return NULL;
}

int mr_request_parse(mr_request_parser *p, const char *line, size_t len, const char *file,
                     uint32_t file_index, uint64_t line_no, mr_request *req,
                     mr_request_error *error)
{
    memset(req, 0, sizeof *req);
    memset(error, 0, sizeof *error);
    p->file = file;
    p->line_no = line_no;
    p->error = error;
    p->text.len = 0;
    cJSON_Delete(p->root);
    p->root = NULL;
    cJSON_free(p->kwargs);
    p->kwargs = NULL;
    req->file_index = file_index;
    req->line_no = line_no;
    if (len && line[len - 1] == '\r')
        len--;
    size_t bad = mr_utf8_invalid_at(line, len);
    if (bad < len)
        return fail(p, "invalid_utf8", "invalid UTF-8 at byte %zu (0x%02x)", bad + 1,
                    (unsigned char)line[bad]);
    const char *end = NULL;
    p->root = cJSON_ParseWithLengthOpts(line, len, &end, false);
    if (!p->root) {
        size_t at = end && end >= line && end <= line + len ? (size_t)(end - line) : 0;
        if (mr_line_is_blank(line, len))
            return fail(p, "invalid_json", "the line is empty");
        return fail(p, "invalid_json", "not valid JSON near byte %zu", at + 1);
    }
    while (end < line + len && (*end == ' ' || *end == '\t'))
        end++;
    if (end < line + len)
        return fail(p, "invalid_json", "text after the JSON value at byte %zu",
                    (size_t)(end - line) + 1);
    if (!cJSON_IsObject(p->root))
        return fail(p, "wrong_type", "the line must be a JSON object, got %s",
                    type_name(p->root));
    const char *nul = find_nul_escape(line, len);
    if (nul)
        return fail(p, "invalid_value", "\\u0000 (a NUL character) in a string at byte %zu",
                    (size_t)(nul - line) + 1);
    return p->job->input_format == MR_FORMAT_PROMPT ? parse_prompt_format(p, p->root, req)
                                                     : parse_openai(p, p->root, req);
}

static void fill_error(mr_request_error *error, const char *code, const char *file,
                       uint64_t line_no, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void fill_error(mr_request_error *error, const char *code, const char *file,
                       uint64_t line_no, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(error, code, file, line_no, fmt, ap);
    va_end(ap);
}

void mr_request_error_prompt_too_long(mr_request_error *error, const mr_request *req,
                                      const char *file, int64_t n_tokens, int64_t limit)
{
    memset(error, 0, sizeof *error);
    error->custom_id = req->custom_id;
    fill_error(error, "prompt_too_long", file, req->line_no,
               "the prompt is %lld tokens, more than input.max_prompt_tokens = %lld",
               (long long)n_tokens, (long long)limit);
}

void mr_request_error_duplicate(mr_request_error *error, const char *custom_id,
                                const char *file, uint64_t line_no, const char *first_file,
                                uint64_t first_line)
{
    memset(error, 0, sizeof *error);
    error->custom_id = custom_id;
    fill_error(error, "duplicate_custom_id", file, line_no,
               "custom_id '%.200s' was already used at %s:%llu, which is served", custom_id,
               first_file, (unsigned long long)first_line);
}

void mr_request_error_line_too_long(mr_request_error *error, const char *file,
                                    uint64_t line_no, uint64_t len, uint64_t limit)
{
    memset(error, 0, sizeof *error);
    fill_error(error, "line_too_long", file, line_no,
               "the line is %llu bytes, more than input.max_line_bytes = %llu",
               (unsigned long long)len, (unsigned long long)limit);
}

uint64_t mr_request_choice_seed(const mr_request *req, uint32_t choice)
{
    if (choice == 0)
        return req->sampling.seed;
    unsigned char bytes[12];
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)(req->sampling.seed >> (8 * i));
    for (int i = 0; i < 4; i++)
        bytes[8 + i] = (unsigned char)(choice >> (8 * i));
    return mr_hash64(bytes, sizeof bytes, 0);
}
