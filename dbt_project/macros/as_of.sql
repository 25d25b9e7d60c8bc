{#- The run's view of time. Every model that reads dated rows filters on as_of_end(): nothing dated
    after the end of the as-of date can influence any table built from it. -#}
{% macro as_of_date() -%}
    cast('{{ var("as_of_date") }}' as date)
{%- endmacro %}

{% macro as_of_end() -%}
    {{ dbt.dateadd('day', 1, as_of_date()) }}
{%- endmacro %}

{#- Start of a trailing window of `days` days that ends at the end of the as-of date. -#}
{% macro window_start(days) -%}
    {{ dbt.dateadd('day', -1 * (days | int) + 1, as_of_date()) }}
{%- endmacro %}

{#- Whole days from `ts` to the end of the as-of date (0 = on the as-of date). -#}
{% macro days_before_as_of(ts) -%}
    {{ dbt.datediff(ts, as_of_date(), 'day') }}
{%- endmacro %}
