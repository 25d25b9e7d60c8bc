{#- Arithmetic whose result type differs between engines, written once. DuckDB turns `x * 1.0 / y` into a
    double; Spark keeps it a decimal, which breaks the contracts that declare `double` and hands pandas
    Decimal objects. Division by zero is null on both (Spark with ANSI mode off, as dbt-spark runs it). -#}
{% macro ratio(numerator, denominator) -%}
    cast({{ numerator }} as {{ type_double() }}) / ({{ denominator }})
{%- endmacro %}

{#- `ts` moved by whole days, keeping its time of day. dbt.dateadd on Spark goes through unix seconds in the
    session time zone (dropping fractions of a second); timestampadd does not. -#}
{% macro add_days(ts, days) -%}
    {{ return(adapter.dispatch('add_days', 'crm_potential')(ts, days)) }}
{%- endmacro %}

{% macro default__add_days(ts, days) -%}
    {{ dbt.dateadd('day', days, ts) }}
{%- endmacro %}

{#- A date becomes midnight first: timestampadd on a date gives a zoned timestamp (Spark's default type). -#}
{% macro spark__add_days(ts, days) -%}
    timestampadd(DAY, {{ days }}, cast({{ ts }} as timestamp_ntz))
{%- endmacro %}
