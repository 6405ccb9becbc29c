/*
 * The Jinja interpreter construct by construct, with the output jinja2
 * gives as transformers configures it (trim_blocks, lstrip_blocks, a
 * trailing newline dropped), Python's semantics where JavaScript ports
 * differ, and the errors: where (line, column) and what.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/template.h"

TestSuite(template);

static int render_at(const char *src, const char *vars, int64_t now, char **out, char *err,
                     size_t errlen)
{
    mr_template *t = NULL;
    *out = NULL;
    int rc = mr_template_compile(src, &t, err, errlen);
    if (rc != MR_TEMPLATE_OK)
        return rc;
    cJSON *v = cJSON_Parse(vars ? vars : "{}");
    cr_assert(v, "bad test JSON: %s", vars);
    mr_template_options opt = {.now = now};
    size_t len;
    rc = mr_template_render(t, v, &opt, out, &len, err, errlen);
    if (rc == MR_TEMPLATE_OK)
        cr_assert_eq(len, strlen(*out));
    cJSON_Delete(v);
    mr_template_free(t);
    return rc;
}

/* src rendered with vars gives want. */
static void check(const char *src, const char *vars, const char *want)
{
    char err[512], *out;
    int rc = render_at(src, vars, 0, &out, err, sizeof err);
    cr_assert_eq(rc, MR_TEMPLATE_OK, "%s: %s", src, err);
    cr_expect_str_eq(out, want, "%s\n gave [%s]\nwanted [%s]", src, out, want);
    free(out);
}

/* src fails with status and exactly the message want. */
static void check_error(const char *src, const char *vars, int status, const char *want)
{
    char err[512], *out;
    int rc = render_at(src, vars, 0, &out, err, sizeof err);
    cr_assert_eq(rc, status, "%s: status %d, wanted %d (%s)", src, rc, status,
                 rc ? err : out);
    cr_expect_str_eq(err, want);
    free(out);
}

Test(template, text_and_output)
{
    check("plain text", NULL, "plain text");
    check("{{ 'a' }}{{ \"b\" }}{{ 1 }}{{ 2.5 }}{{ none }}{{ true }}{{ undefined_name }}", NULL,
          "ab12.5NoneTrue");
    check("{{ 'esc\\n\\t\\'\\\\\\u00e9' }}", NULL, "esc\n\t'\\\xc3\xa9");
    check("{{ 'adjacent' ' strings' }}", NULL, "adjacent strings");
}

Test(template, whitespace_control_as_transformers_configures_jinja2)
{
    /* lstrip_blocks, trim_blocks, and the source's last newline dropped */
    check("x\n  {% if true %}\n  y\n  {% endif %}\nz\n", NULL, "x\n  y\nz");
    check("a {{- ' b ' -}} c", NULL, "a b c");
    check("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    check("a{# a comment #}\nb", NULL, "ab");
    check("  {# indented comment #}\nb", NULL, "b");
    /* a {{ }} neither lstrips nor trims */
    check("  {{ 'v' }}\nw", NULL, "  v\nw");
    /* text after a tag on the same line is not the start of a line */
    check("{% if true %}  {% endif %}|", NULL, "  |");
    check("keep\n\n", NULL, "keep\n");
}

Test(template, if_elif_else)
{
    const char *src = "{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %}";
    check(src, "{\"n\": 1}", "one");
    check(src, "{\"n\": 2}", "two");
    check(src, "{\"n\": 3}", "many");
}

Test(template, for_loops)
{
    check("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
          "{{ loop.length }}{{ loop.revindex }}{{ x }};{% endfor %}",
          "{\"xs\": [\"a\", \"b\"]}", "10TrueFalse22a;21FalseTrue21b;");
    check("{% for x in xs if x > 1 %}{{ x }}/{{ loop.length }} {% endfor %}",
          "{\"xs\": [1, 2, 3]}", "2/2 3/2 ");
    check("{% for x in [] %}no{% else %}empty{% endfor %}", NULL, "empty");
    check("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\": {\"a\": 1, \"b\": 2}}",
          "a=1;b=2;");
    check("{% for k in d %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}",
          "{\"d\": {\"a\": 1, \"b\": 2}}", "ab[h][\xc3\xa9]");
    check("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}"
          "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
          NULL, "13");
    check("{% for x in missing %}x{% endfor %}ok", NULL, "ok");
    check("{% for m in messages[::-1] %}{{ m }}{% endfor %}", "{\"messages\": [1, 2, 3]}", "321");
}

Test(template, set_scopes_and_namespace)
{
    /* a loop body is a scope: its sets do not leak; a namespace's do */
    check("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{% endfor %}{{ x }}", NULL, "1");
    check("{% set ns = namespace(x=1, y='a') %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}"
          "{% endfor %}{{ ns.x }}{{ ns.y }}",
          NULL, "4a");
    /* an if is not a scope */
    check("{% if true %}{% set y = 'in' %}{% endif %}{{ y }}", NULL, "in");
    check("{% if not flag is defined %}{% set flag = false %}{% endif %}{{ flag }}", NULL, "False");
}

Test(template, macros)
{
    check("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}"
          "{{ m(b=4, a=5) }}",
          NULL, "[1B][23][54]");
    check("{% set g = 'top' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", NULL, "top");
}

Test(template, arithmetic_and_comparisons_as_python)
{
    check("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} "
          "{{ 4 / 2 }} {{ 1 + 2 * 3 - 4 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }}",
          NULL, "3 -4 1 2 1024 3.5 2.0 3 0.30000000000000004 1e+20 1.5e-07");
    check("{{ 'ab' ~ 1 ~ none }} {{ 'x' * 3 }} {{ [1] + [2] }}", NULL, "ab1None xxx [1, 2]");
    check("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ [1, 'a'] == [1, 'a'] }}",
          NULL, "True False True True True");
    check("{{ 'ell' in 'hello' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }}", NULL,
          "True True True");
    check("{{ 'y' if x else 'n' }}{{ 'y' if not x }}|{{ x or 'default' }}|{{ x and 1 }}",
          "{\"x\": 0}", "ny|default|0");
    check("{{ -x }} {{ +x }}", "{\"x\": 3}", "-3 3");
}

Test(template, lists_dicts_and_subscripts)
{
    check("{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[:-1] }}{{ xs[::2] }}{{ xs[5] }}",
          "{\"xs\": [1, 2, 3]}", "13[2, 3][1, 2][1, 3]");
    check("{{ d.a }}{{ d['b'] }}{{ d.missing }}{{ d.get('a') }}{{ d.get('zz', 'dflt') }}",
          "{\"d\": {\"a\": 1, \"b\": \"two\"}}", "1two1dflt");
    check("{{ {'a': 1, 'b': [true, none]} }} {{ (1, 2) }} {{ 'it\\'s' }}", NULL,
          "{'a': 1, 'b': [True, None]} [1, 2] it's");
    check("{{ 'h\xc3\xa9llo'[1:3] }}{{ 'abc'[::-1] }}{{ 'abc'[-1] }}", NULL, "\xc3\xa9lcba" "c");
}

Test(template, string_methods_as_python)
{
    check("{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }}", NULL,
          "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c']");
    /* strip with characters strips only those (@huggingface/jinja strips any whitespace) */
    check("[{{ '\\n\\n  x \\n'.lstrip('\\n') }}][{{ ' x \\n\\n'.rstrip('\\n') }}][{{ 'xxhixx'.strip('x') }}]"
          "[{{ ' \\t y \\n'.strip() }}]",
          NULL, "[  x \n][ x ][hi][y]");
    check("{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}{{ 'Hello'.upper() }}"
          "{{ 'Hello'.lower() }}{{ 'hello world'.title() }}{{ 'hELLO'.capitalize() }}",
          NULL, "TrueTrueHELLOhelloHello WorldHello");
    check("{{ 'aXbXc'.replace('X', '-') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abcb'.find('b') }}"
          " {{ 'abcb'.count('b') }} {{ '-'.join(['a', 'b']) }} {{ '\xc3\xa9t\xc3\xa9'.upper() }}",
          NULL, "a-b-c bba 1 2 a-b \xc3\x89T\xc3\x89");
}

Test(template, filters)
{
    check("{{ '  x  ' | trim }}|{{ [1, 2, 3] | length }}|{{ 'h\xc3\xa9' | length }}|"
          "{{ {'a': 1} | items | list }}|{{ 5 | string }}{{ [1, 2] | first }}{{ [1, 2] | last }}",
          NULL, "x|3|2|[['a', 1]]|512");
    check("{{ missing | default('d') }}{{ '' | default('e', true) }}{{ 'v' | d('x') }}"
          "{{ [] | first | default('f') }}",
          NULL, "devf");
    /* lengths count code points, as Python's len() */
    check("{{ '\xf0\x9f\x98\x80\xe6\x9d\xb1' | length }}", NULL, "2");
    check("{{ ['a', 'b'] | join(', ') }} {{ 'ab' | upper }}{{ 'AB' | lower }} "
          "{{ 'a-b' | replace('-', '+') }} {{ [3, 1] | reverse | list }} {{ '42' | int + 1 }}",
          NULL, "a, b ABab a+b [1, 3] 43");
    check("{{ xs | selectattr('on') | map(attribute='n') | join }}"
          "{{ xs | rejectattr('on') | map(attribute='n') | join }}"
          "{{ xs | selectattr('n', 'equalto', 'c') | list | length }}",
          "{\"xs\": [{\"n\": \"a\", \"on\": true}, {\"n\": \"b\"}, {\"n\": \"c\", \"on\": true}]}",
          "acb1");
}

Test(template, tojson_as_transformers)
{
    /* json.dumps(ensure_ascii=False): ", " and ": " on one line, "," before
     * a newline with indent, non-ASCII kept, control characters escaped */
    check("{{ {'a': [1, 2.5, 'h\xc3\xa9\"\\n\\x01'], 'b': none, 'c': true, 'd': {}} | tojson }}",
          NULL, "{\"a\": [1, 2.5, \"h\xc3\xa9\\\"\\n\\u0001\"], \"b\": null, \"c\": true, \"d\": {}}");
    check("{{ {'a': [1, []]} | tojson(indent=2) }}", NULL,
          "{\n  \"a\": [\n    1,\n    []\n  ]\n}");
    check("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", NULL, "{\"a\": 2, \"b\": 1}");
}

Test(template, tests)
{
    check("{{ x is defined }}{{ y is defined }}{{ y is undefined }}{{ n is none }}{{ x is string }}"
          "{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}"
          "{{ false is false }}{{ true is true }}{{ 0 is false }}{{ d is mapping }}"
          "{{ [] is iterable }}{{ 'a' is sequence }}{{ 3 is odd }}{{ 4 is even }}"
          "{{ 9 is divisibleby 3 }}{{ x is not none }}{{ 2 is in [1, 2] }}{{ x is eq('s') }}",
          "{\"x\": \"s\", \"n\": null, \"d\": {}}",
          "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrue");
}

Test(template, strftime_now_formats_the_callers_instant)
{
    char err[256], *out;
    cr_assert_eq(render_at("{{ strftime_now('%d %b %Y') }}", NULL, 1721952000, &out, err,
                           sizeof err),
                 MR_TEMPLATE_OK, "%s", err);
    cr_expect_str_eq(out, "26 Jul 2024");
    free(out);
}

Test(template, raise_exception_gives_the_templates_message)
{
    check_error("a{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must "
                "start with a user message') }}{% endif %}",
                "{\"messages\": [{\"role\": \"assistant\"}]}", MR_TEMPLATE_ERAISE,
                "Conversations must start with a user message");
}

Test(template, what_is_not_supported_fails_at_compile_with_line_and_column)
{
    check_error("{% if x %}\n  {% call foo() %}{% endcall %}\n{% endif %}", NULL,
                MR_TEMPLATE_EINVAL, "line 2, column 6: unsupported statement 'call'");
    check_error("{{ x | wordwrap }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 8: unsupported filter 'wordwrap'");
    check_error("{{ x is prime }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 9: unsupported test 'prime'");
    check_error("ok\n{% if x %}abc", NULL, MR_TEMPLATE_EINVAL,
                "line 2, column 4: 'if' is never closed (no {% endif %})");
    check_error("{% endfor %}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 4: 'endfor' without the statement it belongs to");
    check_error("{{ 1 + }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 8: expected a value, found '}}'");
    check_error("{{ 'open }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 4: a string that does not end");
    check_error("{% break %}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 4: 'break' outside a for loop");
    check_error("{% set x %}a{% endset %}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 4: unsupported: a set block ({% set x %}...{% endset %})");
    char deep[1024] = "{{ ";
    for (int i = 0; i < 300; i++)
        strcat(deep, "(");
    for (int i = 0; i < 300; i++)
        strcat(deep, ")");
    strcat(deep, " }}");
    check_error(deep, NULL, MR_TEMPLATE_EINVAL, "line 1, column 203: nested more than 200 deep");
}

Test(template, errors_while_rendering_say_where)
{
    check_error("\n{{ 1 + 'a' }}", NULL, MR_TEMPLATE_EINVAL,
                "line 2, column 6: unsupported operand types for +: integer and string");
    check_error("{{ x.y }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 5: cannot read 'y' of an undefined value");
    check_error("{{ nothing() }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 11: 'nothing' is undefined");
    check_error("{{ 'a'.nomethod() }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 16: unsupported method 'nomethod'");
    check_error("{{ x | tojson }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 8: tojson: a value of type undefined is not JSON");
    /* what would take the machine down stops with a message instead */
    check_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 20: macro calls nested more than 100 deep");
    check_error("{{ range(1000000000) | length }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 9: range too big (more than 100000 items)");
    check_error("{{ 'ab' * 100000000 }}", NULL, MR_TEMPLATE_EINVAL,
                "line 1, column 9: a string of more than 16777216 bytes");
}
