#!/usr/bin/python3
"""Small templates, one language feature each, rendered by Python Jinja2 in transformers' configuration
(make_goldens.make_env). Writes features.json, which FeatureTests replays against our interpreter.

Run with Debian's Python:  /usr/bin/python3 make_feature_goldens.py
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the test data folder

import jinja2  # noqa: E402

from make_goldens import HERE, make_env  # noqa: E402

MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]

# (name, template, variables)
CASES = [
    # Output and Python printing
    ("print_none_bools", "{{ none }}|{{ true }}|{{ false }}|{{ None }}|{{ True }}", {}),
    ("print_numbers", "{{ 1 }} {{ 1.0 }} {{ 0.1 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ -2.50 }} {{ 1_000 }}", {}),
    ("print_containers", "{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v', 'n': [1]} }} {{ (1,) }} {{ (1, 2) }} {{ () }}", {}),
    ("print_string_repr", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'tab\\tnl\\n', 'ünï 🚀'] }}", {}),
    ("print_undefined", "[{{ missing }}][{{ missing ~ 'x' }}]", {}),
    ("print_list_parts", "{{ messages[0].content }}", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    # Arithmetic
    ("division", "{{ 7 / 2 }} {{ 6 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7.5 // 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("arith_mixed", "{{ 1 + 2.5 }} {{ true + 1 }} {{ 3 * 'ab' }} {{ [1] * 3 }} {{ 'a' ~ 1 ~ none ~ true }} {{ -(3) }} {{ +4 }}", {}),
    ("string_concat", "{{ 'a' + 'b' }}{{ [1, 2] + [3] }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ 10 - 2 - 3 }} {{ not true or true }} {{ not (true or true) }}", {}),
    ("filter_precedence", "{{ messages|length - 1 }} {{ 'a' ~ 'b'|upper }} {{ -3|abs }}", {"messages": MSGS}),
    ("err_unary_binds_before_filter", "{{ -messages|length }}", {"messages": MSGS}),
    # Comparisons and logic
    ("comparisons", "{{ 1 < 2 < 3 }} {{ 1 < 2 > 3 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ none == none }} {{ 1 != 2 }}", {}),
    ("in_operator", "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' in missing }}", {}),
    ("and_or_values", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ none or [] }} [{{ missing or '' }}]", {}),
    ("truthiness", "{% for v in [0, 1, '', 'a', [], [0], {}, {'a': 1}, none, 0.0] %}{{ 'T' if v else 'F' }}{% endfor %}", {}),
    ("conditional_expr", "{{ 'y' if true else 'n' }} {{ 'y' if false else 'n' }} [{{ 'y' if false }}] {{ 'a' if false else 'b' if true else 'c' }}", {}),
    # Access
    ("index_negative", "{{ messages[-1].content }} {{ messages[0]['role'] }} {{ 'hello'[1] }} {{ 'hello'[-1] }}", {"messages": MSGS}),
    ("slicing", "{{ [1,2,3,4,5][1:] }} {{ [1,2,3,4,5][:-2] }} {{ [1,2,3,4,5][::-1] }} {{ [1,2,3,4,5][::2] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3][5:] }} {{ [1,2,3,4,5][-2:] }} {{ [1,2,3,4,5][3:0:-1] }}", {}),
    ("slicing_unicode", "{{ 'h🚀llo'[1] }}|{{ 'h🚀llo'[::-1] }}|{{ 'h🚀llo'|length }}", {}),
    ("missing_keys", "[{{ m.nothing }}][{{ m['nothing'] }}][{{ m.nothing is defined }}][{{ [1][5] is defined }}]", {"m": {"a": 1}}),
    ("none_attribute", "[{{ m.content.x is defined }}]", {"m": {"content": None}}),
    ("dict_method_vs_key", "{{ d.items() | list }} {{ d['items'] }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('x') }} {{ d.get('y', 'dflt') }} {{ d.get('y') }}", {"d": {"items": 5, "x": 1}}),
    ("attr_dot_integer", "{{ xs.0 }} {{ xs.1 }}", {"xs": ["a", "b"]}),
    # Statements
    ("if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}other{% endif %},{% endfor %}", {}),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("for_prev_next", "{% for x in [1, 2, 3] %}[{{ loop.previtem }}|{{ loop.nextitem }}]{% endfor %}", {}),
    ("for_cycle_changed", "{% for x in [1, 1, 2] %}{{ loop.cycle('a', 'b') }}{{ loop.changed(x) }}{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in missing %}x{% else %}undefined-empty{% endfor %}", {}),
    ("for_filter", "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.content }}/{{ loop.length }} {% endfor %}", {"messages": MSGS}),
    ("for_unpack", "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", {}),
    ("for_dict", "{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}", {}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in [1, 2] %}{{ loop.index }}{% endfor %}{{ loop.index }}|{% endfor %}", {}),
    # Recursive loops and call-site unpacking (nested tool schemas, macros forwarding options)
    ("for_recursive", "{% for item in tree recursive %}[{{ loop.depth }}/{{ loop.depth0 }}:{{ item.name }}{% if item.children %}{{ loop(item.children) }}{% endif %}]{% endfor %}", {"tree": [{"name": "a", "children": [{"name": "b", "children": [{"name": "c", "children": []}]}, {"name": "d"}]}, {"name": "e"}]}),
    ("for_recursive_filter_else", "{% for k, v in d.items() if k != 'skip' recursive %}{{ k }}({% if v is mapping %}{{ loop(v.items()) }}{% else %}{{ v }}{% endif %}){% else %}empty{% endfor %}", {"d": {"a": {"x": 1, "skip": 2, "y": {}}, "skip": 3, "b": 4}}),
    ("call_star_args", "{% macro m(a, b, c='C') %}{{ a }}{{ b }}{{ c }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(*xs) }}|{{ m(1, *[2, 3, 4]) }}|{{ m(**{'a': 'x', 'b': 'y'}) }}|{{ m('p', **{'b': 'q', 'z': 1}) }}|{{ m(*['u'], b='v', **{'c': 'w'}) }}", {"xs": ["one", "two"]}),
    ("call_unpacked_builtins", "{{ range(*[1, 7, 2]) | list }} {{ dict(**{'k': 1}) | tojson }} {{ namespace(**{'n': 3}).n }}", {}),
    ("err_keyword_after_double_star", "{{ dict(**{'k': 1}, j=2) }}", {}),
    ("err_loop_not_recursive", "{% for x in [1] %}{{ loop([2]) }}{% endfor %}", {}),
    ("err_star_not_iterable", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(*5) }}", {}),
    ("err_double_star_not_mapping", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(**[1]) }}", {}),
    ("set_scoping", "{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 3 %}{% endif %}{{ x }}", {}),
    ("set_in_loop_persists", "{% for i in [1, 2, 3] %}{% if i == 1 %}{% set y = 'set' %}{% endif %}[{{ y }}]{% endfor %}", {}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}", {"messages": MSGS}),
    ("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}", {}),
    ("set_block", "{% set body %}Hello {{ name }}!{% endset %}[{{ body }}]{% set up | upper %}shout{% endset %}{{ up }}", {"name": "you"}),
    ("macro_basic", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }} [{{ greet() }}]", {}),
    ("macro_varargs_kwargs", "{% macro f(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, x=4) }}", {}),
    ("macro_recursion", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("macro_sees_outer", "{% set prefix = '>' %}{% macro show(x) %}{{ prefix }}{{ x }}{% endmacro %}{{ show(1) }}", {}),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inner {{ 1 + 1 }}{% endcall %}", {}),
    ("call_block_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}[{{ x }}]{% endcall %}", {}),
    ("filter_block", "{% filter upper %}hello {{ 'world' }}{% endfilter %}|{% filter trim | replace('a', 'o') %}  banana  {% endfilter %}", {}),
    ("generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}|{% endfor %}", {"messages": MSGS}),
    ("with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    ("comments_raw", "a{# comment {{ x }} #}b{% raw %}{{ not evaluated }} {% if %}{% endraw %}c", {}),
    # Whitespace control
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nend", {}),
    ("lstrip_blocks", "<\n    {% if true %}\n    indented\n    {% endif %}\n>", {}),
    ("lstrip_not_variables", "<\n    {{ 'v' }}\n>", {}),
    ("minus_markers", "a   {{- 'b' -}}   c\n\n{%- if true -%}\n\n  d  {%- endif %} e", {}),
    ("plus_markers", "x\n    {%+ if true %}y{% endif +%}\nz", {}),
    ("comment_whitespace", "a\n  {# c #}\nb {#- c -#} c", {}),
    ("trailing_newline", "line\n", {}),
    ("crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc", {}),
    ("tag_after_variable_line", "{{ 'x' }}  {% if true %}y{% endif %}", {}),
    # Tests
    ("tests_types", "{{ none is none }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} {{ x is undefined }} {{ 1 is defined }}", {}),
    ("tests_values", "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'a' is equalto 'a' }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ none is sameas none }} {{ true is true }} {{ 0 is false }} {{ 2 is in [1, 2] }}", {}),
    ("tests_not", "{{ x is not defined }} {{ none is not none }} {{ not x is defined }} {{ range is callable }} {{ 'x' is callable }}", {}),
    # String methods
    ("str_methods", "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}", {}),
    ("str_methods2", "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'hi'.upper() }} {{ 'HI'.lower() }} {{ 'hello wORLD'.title() }} {{ 'hELLO'.capitalize() }} {{ '{} and {}'.format(1, 'x') }} {{ '{name}!'.format(name='N') }}", {}),
    ("str_methods3", "{{ '-'.join(['a', 'b']) }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }} {{ '12'.isdigit() }} {{ 'a\\nb'.splitlines() }} {{ 'x.y.z'.rsplit('.', 1)[0] }} {{ 'think</think>answer'.split('</think>')[-1] }}", {}),
    # Filters
    ("filters_text", "{{ '  x  '|trim }}|{{ 'ab'|upper }}|{{ 'AB'|lower }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|{{ 'aXa'|replace('a', 'b') }}|{{ 'one two  three'|wordcount }}|{{ '<a & \"b\">'|e }}|{{ '<a>'|safe }}|{{ '<a>'|escape }}", {}),
    ("filters_length", "{{ [1, 2]|length }} {{ 'abc'|count }} {{ {'a': 1}|length }} {{ missing|length }}", {}),
    ("filters_first_last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} [{{ []|first }}]", {}),
    ("filters_join", "{{ [1, 2, 3]|join(', ') }} {{ ['a', 'b']|join }} {{ messages|join('|', attribute='role') }}", {"messages": MSGS}),
    ("filters_default", "{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ missing|d('x') }} [{{ missing|default }}]", {}),
    ("filters_list_items", "{{ 'ab'|list }} {{ {'a': 1, 'b': 2}|items|list }} {{ missing|items|list }} {{ {'k': 'v'}|list }}", {}),
    ("filters_map_select", "{{ messages|map(attribute='role')|list }} {{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('even')|list }} {{ ['a', 'B']|map('upper')|list }} {{ [0, 1, '', 'x']|select|list }}", {"messages": MSGS}),
    ("filters_selectattr", "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ messages|rejectattr('role', 'eq', 'user')|list|length }} {{ tools|selectattr('function.name')|list|length }}", {"messages": MSGS, "tools": [{"function": {"name": "a"}}, {"function": {"name": ""}}]}),
    ("filters_none_select", "{{ none|selectattr('type', 'equalto', 'x')|list }} {{ none|map(attribute='x')|list }}", {}),
    ("filters_unique_sort", "{{ ['b', 'A', 'a', 'c']|unique|list }} {{ ['b', 'A', 'a', 'c']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ messages|sort(attribute='role')|map(attribute='content')|list }} {{ ['b', 'A']|sort(case_sensitive=true) }}", {"messages": MSGS}),
    ("filters_reverse", "{{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }}", {}),
    ("filters_numbers", "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 'x'|float }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 0.125|round(2) }} {{ -2.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 7|float }}", {}),
    ("filters_string", "{{ 42|string }} {{ none|string }} {{ [1]|string }} {{ true|string }}", {}),
    ("filters_indent", "[{{ 'a\\nb\\n\\nc'|indent }}] [{{ 'a\\nb'|indent(2, true) }}] [{{ 'a\\n\\nb'|indent(2, blank=true) }}] [{{ 'x\\ny'|indent('> ') }}]", {}),
    ("filters_batch_dictsort", "{{ [1, 2, 3, 4, 5]|batch(2)|list }} {{ [1, 2, 3]|batch(2, 0)|list }} {{ {'b': 1, 'a': 2}|dictsort }} {{ {'b': 1, 'a': 2}|dictsort(by='value') }}", {}),
    ("filters_min_max_sum", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ [{'n': 1}, {'n': 5}]|sum(attribute='n') }} {{ ['b', 'A']|max }} {{ [1.5, 2]|sum(start=1) }}", {}),
    ("filters_attr_format", "{{ d|attr('x') }} {{ '%s-%d'|format('a', 3) }} {{ '%s'|format(1.5) }}", {"d": {"x": 1}}),
    # tojson
    ("tojson_basic", "{{ v|tojson }}", {"v": {"s": "ünï 🚀 \"q\" \\ / \n\t", "i": 3, "f": 0.5, "big": 1e20, "t": True, "n": None, "l": [1, [2, {}], []], "e": {}}}),
    ("tojson_indent", "{{ v|tojson(indent=2) }}|{{ v|tojson(indent=0) }}|{{ []|tojson(indent=2) }}", {"v": {"a": [1, {"b": None}], "c": "x"}}),
    ("tojson_options", "{{ v|tojson(ensure_ascii=true) }} {{ v|tojson(sort_keys=true) }} {{ v|tojson(separators=(',', ':')) }}", {"v": {"z": "é🚀", "a": [1, 2]}}),
    ("tojson_literals", "{{ 'x'|tojson }} {{ 1.0|tojson }} {{ true|tojson }} {{ none|tojson }} {{ (1, 2)|tojson }} {{ {1: 'a', true: 'b', none: 'c'}|tojson }}", {}),
    ("tojson_from_input", "{% for t in tools %}{{ t|tojson }}\n{% endfor %}", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": 1.25, "y": 100, "z": -0.0}}}]}),
    # Globals
    ("range_global", "{{ range(3)|list }} {{ range(1, 4)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }} {{ dict({'k': 1}) }}", {}),
    ("strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M:%S') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%B %-d, %A') }}", {}),
    ("joiner_cycler", "{% set j = joiner(', ') %}{% for x in [1, 2, 3] %}{{ j() }}{{ x }}{% endfor %}", {}),
    ("variables_shadow_globals", "{{ range }}", {"range": "mine"}),
    ("number_literals", "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000_000 }} {{ 00 }} {{ 1.5e3 }} {{ 01.5 }} {{ 2E-3 }}", {}),
    ("err_leading_zero", "{{ [01] }}", {}),
    ("list_pop_allowed", "{% set x = [1, 2, 3] %}{{ x.pop() }}{{ x.pop(0) }}{{ x }}", {}),
    ("print_objects", "{% for x in [1] %}{{ loop }}{% endfor %}|{{ missing }}", {}),
    # Errors that Jinja2 raises at render time
    ("err_sort_mixed", "{{ [1, 'a']|sort }}", {}),
    ("err_divisibleby_zero", "{{ 5 is divisibleby 0 }}", {}),
    ("err_dict_order", "{{ {'a': 1} < {'b': 2} }}", {}),
    ("err_raise_exception", "before{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}", {}),
    ("err_undefined_add", "{{ missing + 1 }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_undefined_call", "{{ missing() }}", {}),
    ("err_undefined_item", "{{ missing[0] }}", {}),
    ("err_none_method", "{{ m.content.strip() }}", {"m": {"content": None}}),
    ("err_not_callable", "{{ 'abc'() }}", {}),
    ("err_str_plus_int", "{{ 'a' + 1 }}", {}),
    ("err_list_plus_str", "{{ [1] + 'a' }}", {}),
    ("err_compare", "{{ 1 < 'a' }}", {}),
    ("err_divide_zero", "{{ 1 / 0 }}", {}),
    ("err_not_iterable", "{% for x in 5 %}{% endfor %}", {}),
    ("err_unpack", "{% set a, b = [1, 2, 3] %}", {}),
    ("err_macro_too_many_args", "{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", {}),
    ("err_macro_unknown_kwarg", "{% macro f(a) %}{% endmacro %}{{ f(b=1) }}", {}),
    ("err_filter_args", "{{ 'x'|upper(1) }}", {}),
    ("err_append_sandbox", "{% set xs = [] %}{{ xs.append(1) }}", {}),
    ("err_range_too_big", "{{ range(1000000)|length }}", {}),
    ("err_set_attribute_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("err_tojson_undefined", "{{ missing|tojson }}", {}),
    ("err_in_int", "{{ 1 in 5 }}", {}),
    ("err_undefined_compare", "{{ missing > 1 }}", {}),
    ("err_undefined_neg", "{{ -missing }}", {}),
]


def main():
    env = make_env()
    results = []
    for name, source, variables in CASES:
        entry = {"name": name, "template": source, "variables": variables}
        try:
            entry["expected"] = env.from_string(source).render(**variables)
        except jinja2.exceptions.TemplateError as error:
            if type(error) is jinja2.exceptions.TemplateError:
                entry["raise_exception"] = str(error)
            else:
                entry["error"] = f"{type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001
            entry["error"] = f"{type(error).__name__}: {error}"
        results.append(entry)
    with open(os.path.join(HERE, "features.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(results)} feature cases, {sum(1 for r in results if 'expected' not in r)} expected errors")


if __name__ == "__main__":
    main()
