{#- The column rules of the model behind `relation` (config.meta.rules of each column in its yml), as a list
    of checks {model, column, rule, breaks, rules_file} for the column_rules test (tests/generic/column_rules.sql).
    `breaks` is SQL that is true for a row breaking the rule and false or null otherwise; `rule` names the rule
    and its bound in words a failure line can show ('not_null', 'min 0', 'max 1', 'finite'). Call it only when
    `execute` is true: the graph is empty while parsing. -#}
{% macro column_rules_checks(relation) %}
    {%- set node = column_rules_node(relation) -%}
    {%- set known = ['not_null', 'min', 'max', 'finite'] -%}
    {%- set rules_file = (node.patch_path or node.original_file_path).split('://')[-1] -%}
    {%- set checks = [] -%}
    {%- for column in node.columns.values() -%}
        {%- set rules = (column.config or {}).get('meta', {}).get('rules') or column.meta.get('rules') or {} -%}
        {%- set unknown = rules.keys() | reject('in', known) | list -%}
        {%- if unknown -%}
            {{ exceptions.raise_compiler_error("column_rules: unknown rule(s) " ~ unknown | join(', ') ~ " on "
               ~ node.name ~ "." ~ column.name ~ " in " ~ rules_file ~ " (known: " ~ known | join(', ') ~ ")") }}
        {%- endif -%}
        {%- set quoted = adapter.quote(column.name) -%}
        {%- set found = [] -%}
        {%- if rules.get('not_null') -%}
            {%- do found.append(('not_null', quoted ~ ' is null')) -%}
        {%- endif -%}
        {%- for bound, op in [('min', '<'), ('max', '>')] if rules.get(bound) is not none -%}
            {%- if rules[bound] is not number -%}
                {{ exceptions.raise_compiler_error("column_rules: " ~ bound ~ " of " ~ node.name ~ "." ~ column.name
                   ~ " in " ~ rules_file ~ " must be a number") }}
            {%- endif -%}
            {%- do found.append((bound ~ ' ' ~ rules[bound], quoted ~ ' ' ~ op ~ ' ' ~ rules[bound])) -%}
        {%- endfor -%}
        {%- if rules.get('finite') -%}
            {%- do found.append(('finite', 'not ' ~ is_finite(quoted))) -%}
        {%- endif -%}
        {%- for rule, breaks in found -%}
            {%- do checks.append({'model': node.name, 'column': column.name, 'rule': rule, 'breaks': breaks,
                                  'rules_file': rules_file}) -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- if not checks -%}
        {{ exceptions.raise_compiler_error("column_rules on " ~ node.name ~ ": no column of it declares rules in "
           ~ rules_file ~ " (config: {meta: {rules: {...}}}); drop the test or declare them") }}
    {%- endif -%}
    {{ return(checks) }}
{% endmacro %}

{#- The graph node (model, seed or snapshot) a test's `model` relation was built from. -#}
{% macro column_rules_node(relation) %}
    {%- for node in graph.nodes.values()
            if node.resource_type in ('model', 'seed', 'snapshot')
            and (node.alias or node.name) | lower == relation.identifier | lower
            and node.schema | lower == relation.schema | lower -%}
        {{ return(node) }}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("column_rules: no model in the graph for " ~ relation) }}
{% endmacro %}
