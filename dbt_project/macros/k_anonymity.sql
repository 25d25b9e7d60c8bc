{#- k-anonymity for a published table: every combination of its quasi-identifiers (the columns someone
    could know about a person from elsewhere: gender, country, age, tenure...) must cover at least k
    rows, so no row can be singled out by them.

    k_anonymous_ctes emits CTE definitions, comma-separated and without a trailing comma (call it as
    `with base as (...), {{ k_anonymous_ctes(...) }}, final as (...)`), named `<prefix>_<n>`, that
    generalise step by step:

    * `source`: a relation or CTE with `key` and the `quasi_identifiers` columns (varchar, no nulls:
      coalesce them to 'unknown' first; nulls would form a group of their own anyway).
    * `steps`: a list of dicts {column: SQL expression}. Step by step, only the rows whose current
      combination covers fewer than k rows get the step's expressions (evaluated on the current values,
      so one step can widen a band, `'other'` a country and its region together); group sizes are counted
      again after every step. Rows leave only groups smaller than k and only join groups, so a group
      that already reached k never drops below it: the order of the steps is the order of preference
      (what to give up first).
    * Last resort: rows still in groups smaller than k get 'suppressed' in every quasi-identifier. If
      that leaves 1..k-1 suppressed rows, the smallest group that reached k is suppressed with them (a
      group of suppressed rows must reach k too).

    `<prefix>_final` holds `key`, the generalised quasi-identifiers and `quasi_identifiers_suppressed`.
    Plain SQL (window counts, CASE) on purpose: it runs unchanged on DuckDB and Spark; the one ranking over
    everything ranks the distinct groups, not the rows. With fewer than k rows in all, k-anonymity is
    impossible: every row is suppressed and the k_anonymous test fails. -#}
{% macro k_anonymous_ctes(source, key, quasi_identifiers, steps, k, prefix='k_anonymous') -%}
{%- set qis = quasi_identifiers | join(', ') -%}
{{ prefix }}_0 as (

    select {{ key }}, {{ qis }}, count(*) over (partition by {{ qis }}) as group_size
    from {{ source }}

),
{%- for step in steps %}

{{ prefix }}_{{ loop.index }} as (

    select generalised.*, count(*) over (partition by {{ qis }}) as group_size
    from (
        select
            {{ key }}
            {%- for column in quasi_identifiers %},
            {% if column in step -%}
            case when group_size < {{ k }} then {{ step[column] }} else {{ column }} end as {{ column }}
            {%- else -%}
            {{ column }}
            {%- endif -%}
            {%- endfor %}
        from {{ prefix }}_{{ loop.index0 }}
    ) as generalised

),
{%- endfor %}

{{ prefix }}_suppressed as (

    select
        {{ key }},
        {%- for column in quasi_identifiers %}
        case when group_size < {{ k }} then 'suppressed' else {{ column }} end as {{ column }},
        {%- endfor %}
        group_size,
        group_size < {{ k }} as is_suppressed
    from {{ prefix }}_{{ steps | length }}

),

{{ prefix }}_groups as (

    -- the ranking below is over the groups, not the rows: a window over every row without a partition
    -- would run in one task on a distributed engine
    select
        is_suppressed, group_size, {{ qis }},
        sum(case when is_suppressed then count(*) else 0 end) over () as n_suppressed,
        -- 1 = the smallest group that reached k (suppressed rows rank last)
        dense_rank() over (
            order by case when is_suppressed then 1 else 0 end, group_size, {{ qis }}
        ) as group_rank
    from {{ prefix }}_suppressed
    group by is_suppressed, group_size, {{ qis }}

),

{{ prefix }}_ranked as (

    select rows_.*, groups_.n_suppressed, groups_.group_rank
    from {{ prefix }}_suppressed as rows_
    inner join {{ prefix }}_groups as groups_
        on rows_.is_suppressed = groups_.is_suppressed
        and rows_.group_size = groups_.group_size
        {%- for column in quasi_identifiers %}
        and rows_.{{ column }} = groups_.{{ column }}
        {%- endfor %}

),

{{ prefix }}_final as (

    select
        {{ key }},
        {%- for column in quasi_identifiers %}
        case when top_up then 'suppressed' else {{ column }} end as {{ column }},
        {%- endfor %}
        is_suppressed or top_up as quasi_identifiers_suppressed
    from (
        select
            *,
            not is_suppressed and n_suppressed > 0 and n_suppressed < {{ k }} and group_rank = 1 as top_up
        from {{ prefix }}_ranked
    ) as topped_up

)
{%- endmacro %}

{#- The k of customer_profile and its quasi-identifiers: one home for the model and its test. -#}
{% macro customer_profile_k() -%}
    {{ return(5) }}
{%- endmacro %}

{% macro customer_profile_quasi_identifiers() -%}
    {{ return(['gender', 'country', 'region', 'age_band', 'tenure_band']) }}
{%- endmacro %}
