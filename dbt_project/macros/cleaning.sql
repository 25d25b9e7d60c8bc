{#- Cleaning helpers. Adapter-specific syntax lives only here (dispatch), so the models stay portable. -#}

{% macro clean_text(col) -%}
    nullif(trim({{ col }}), '')
{%- endmacro %}

{#- ISO 8601 dates and timestamps (space or T, optional trailing Z), plus the unambiguous
    YYYY/MM/DD and DD.MM.YYYY. Anything else (for example 03/04/2024: March or April?) is null and the
    row is quarantined as unparseable. -#}
{% macro parse_timestamp(col) -%}
    {{ return(adapter.dispatch('parse_timestamp')(col)) }}
{%- endmacro %}

{% macro default__parse_timestamp(col) -%}
    {{ try_cast_to("replace(replace(" ~ clean_text(col) ~ ", 'T', ' '), 'Z', '')", api.Column.translate_type('timestamp')) }}
{%- endmacro %}

{% macro duckdb__parse_timestamp(col) -%}
    coalesce(
        try_cast(replace(replace({{ clean_text(col) }}, 'T', ' '), 'Z', '') as timestamp),
        try_strptime({{ clean_text(col) }}, '%Y/%m/%d'),
        try_strptime({{ clean_text(col) }}, '%d.%m.%Y')
    )
{%- endmacro %}

{#- A cast that yields null instead of failing (dbt.safe_cast is a plain cast on some adapters). -#}
{% macro try_cast_to(expr, data_type) -%}
    {{ return(adapter.dispatch('try_cast_to')(expr, data_type)) }}
{%- endmacro %}

{% macro default__try_cast_to(expr, data_type) -%}
    {{ dbt.safe_cast(expr, data_type) }}
{%- endmacro %}

{% macro duckdb__try_cast_to(expr, data_type) -%}
    try_cast({{ expr }} as {{ data_type }})
{%- endmacro %}

{#- Numbers parse as 64-bit floats (dbt.type_float() is 32-bit on DuckDB: 7 digits, cents lost on large
    amounts). 'double' is understood by DuckDB, Spark, Snowflake and Databricks. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'crm_potential')()) }}
{%- endmacro %}

{% macro default__type_double() -%}double{%- endmacro %}

{% macro postgres__type_double() -%}double precision{%- endmacro %}

{% macro parse_number(col) -%}
    {{ try_cast_to(clean_text(col), type_double()) }}
{%- endmacro %}

{#- Integers: "3" and "3.0" parse, "3.5" and "three" do not. -#}
{% macro parse_int(col) -%}
    case when {{ parse_number(col) }} = floor({{ parse_number(col) }})
         then {{ try_cast_to(parse_number(col), dbt.type_int()) }} end
{%- endmacro %}

{% macro parse_bool(col) -%}
    case
        when lower(trim({{ col }})) in ('true', 't', 'yes', 'y', '1') then true
        when lower(trim({{ col }})) in ('false', 'f', 'no', 'n', '0') then false
    end
{%- endmacro %}

{% macro normalise_email(col) -%}
    lower({{ clean_text(col) }})
{%- endmacro %}

{% macro normalise_country(col) -%}
    upper({{ clean_text(col) }})
{%- endmacro %}

{#- Keep digits and a leading +; "0049-..." and "+49 ..." both become "+49...". -#}
{% macro normalise_phone(col) -%}
    {{ return(adapter.dispatch('normalise_phone')(col)) }}
{%- endmacro %}

{% macro default__normalise_phone(col) -%}
    nullif(regexp_replace(regexp_replace(trim({{ col }}), '^00', '+'), '[^0-9+]', ''), '')
{%- endmacro %}

{% macro duckdb__normalise_phone(col) -%}
    nullif(regexp_replace(regexp_replace(trim({{ col }}), '^00', '+'), '[^0-9+]', '', 'g'), '')
{%- endmacro %}

{#- The moment this dbt invocation started (UTC): rows dated after it are in the future. -#}
{% macro run_started() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ api.Column.translate_type('timestamp') }})
{%- endmacro %}

{#- The raw record as text, "column=value" pairs, for the quarantine. -#}
{% macro raw_row(columns, relation=none) -%}
    {%- set prefix = relation ~ '.' if relation else '' -%}
    {%- set parts = [] -%}
    {%- for col in columns -%}
        {%- do parts.append("'" ~ col ~ "='") -%}
        {%- do parts.append("coalesce(" ~ prefix ~ col ~ ", '')") -%}
        {%- if not loop.last %}{% do parts.append("'; '") %}{% endif -%}
    {%- endfor -%}
    {{ dbt.concat(parts) }}
{%- endmacro %}

{#- A hash of the raw record's contract columns: duplicates with different hashes conflict. -#}
{% macro row_hash(columns, relation=none) -%}
    {{ dbt.hash(raw_row(columns, relation)) }}
{%- endmacro %}

{#- A present-but-unparseable value: text that is there but did not parse. -#}
{% macro unparseable(raw, parsed) -%}
    ({{ clean_text(raw) }} is not null and {{ parsed }} is null)
{%- endmacro %}

{#- Money aggregates. Amounts are 64-bit floats, and a float sum depends on the order rows arrive in (which
    DuckDB's parallel aggregation does not fix): rounding sums to 4 decimals (finer than any currency's
    minor unit) makes them exact and repeatable, and a mean is that sum over the count. -#}
{% macro money_sum(expr) -%}
    round(sum({{ expr }}), 4)
{%- endmacro %}

{% macro money_mean(expr) -%}
    round(sum({{ expr }}), 4) / nullif(count({{ expr }}), 0)
{%- endmacro %}
