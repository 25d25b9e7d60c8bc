{#- The run's view of time. Every staging model filters on as_of_end(): nothing dated after the end of
    the as-of date can influence any table built from it. Features are computed per cutoff date
    (int_cutoffs: the as-of date and the back-dated cutoffs used for training and back-tests); a
    cutoff's features only see rows dated before the end of that cutoff (cutoff_end). The cutoff dates
    and the window edges are known when the SQL is compiled: macros/cutoffs.sql. -#}
{% macro as_of_date() -%}
    cast('{{ var("as_of_date") }}' as date)
{%- endmacro %}

{% macro as_of_end() -%}
    {{ add_days(as_of_date(), 1) }}
{%- endmacro %}

{#- Whole days from `ts` to the date in `anchor` (0 = on that date). -#}
{% macro days_before(ts, anchor='cutoff_date') -%}
    {{ days_between(ts, anchor) }}
{%- endmacro %}

{#- Whole days from `first` to `second`, a bigint on every engine (Spark's datediff is an int). -#}
{% macro days_between(first, second) -%}
    cast({{ dbt.datediff(first, second, 'day') }} as {{ dbt.type_bigint() }})
{%- endmacro %}
