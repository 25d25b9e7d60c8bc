{#- Every column rule of a model in one test and one scan of the model (issue 13: one strong test per model
    instead of a not_null and an accepted_range test per column, each a query and a Dagster check event).

    The rules sit with the column they are about, in the model's yml, so the yml and the docs read per column:
        - name: churn_probability
          description: "..."
          config: {meta: {rules: {not_null: true, min: 0, max: 1}}}
    (dbt 1.10+ keeps a column's meta under config:). Rules: not_null (true: no null); min and max (inclusive
    numeric bounds, either optional; nulls pass, as in the accepted_range tests they replace); finite (true:
    no NaN or +-Infinity; nulls pass). The model has the test once:  data_tests: [column_rules]

    Why the rules are read from the graph and not passed as test arguments: as arguments they would be a
    second list of the model's columns beside `columns:`, kept in step by hand, and the docs would not show a
    column's rules with the column. The graph (`graph.nodes`, read only when `execute` is true) holds the
    parsed yml, so the test checks exactly what the yml declares; the test on a model without any rule, or a
    rule this test does not know, is a compile error rather than a test that checks nothing.

    Returns one row per broken (column, rule): the model, the column, the rule with its bound, how many rows
    break it, and the yml that declares it; never a value from the data. dbt counts the failures as the rows
    breaking each rule, summed (fail_calc), so Dagster's failed row count counts rows, not rules. The rows are
    not stored: a failed run reads them by running this test's compiled SQL again (orchestration/failures.py,
    column_rules_failures), so a night on which every rule holds pays nothing for the details (store_failures
    cost about 20 ms per test, 0.3-0.45 s a run on the sample). Portable SQL: one aggregate row of
    count(case when ...) in one scan, then one row per rule picked out of it. -#}
{% test column_rules(model) %}
{{ config(fail_calc='coalesce(sum(n_rows), 0)') }}
{%- set checks = column_rules_checks(model) if execute else [] -%}
{%- if not checks %}
select
    cast(null as {{ dbt.type_string() }}) as model,
    cast(null as {{ dbt.type_string() }}) as column_name,
    cast(null as {{ dbt.type_string() }}) as rule,
    cast(0 as {{ dbt.type_bigint() }}) as n_rows,
    cast(null as {{ dbt.type_string() }}) as rules_file
where 1 = 0
{%- else %}
with counted as (
    select
    {%- for check in checks %}
        count(case when {{ check.breaks }} then 1 end) as n_{{ loop.index }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}
),

rules as (
    {%- for check in checks %}
    select {{ loop.index }} as rule_index, '{{ check.column }}' as column_name, '{{ check.rule }}' as rule
    {{- "\n    union all" if not loop.last }}
    {%- endfor %}
),

broken as (
    select
        rules.rule_index,
        rules.column_name,
        rules.rule,
        case rules.rule_index
        {%- for check in checks %}
            when {{ loop.index }} then counted.n_{{ loop.index }}
        {%- endfor %}
        end as n_rows
    from rules
    cross join counted
)

select
    cast('{{ checks[0].model }}' as {{ dbt.type_string() }}) as model,
    cast(column_name as {{ dbt.type_string() }}) as column_name,
    cast(rule as {{ dbt.type_string() }}) as rule,
    cast(n_rows as {{ dbt.type_bigint() }}) as n_rows,
    cast('{{ checks[0].rules_file }}' as {{ dbt.type_string() }}) as rules_file
from broken
where n_rows > 0
order by rule_index
{%- endif %}
{% endtest %}
