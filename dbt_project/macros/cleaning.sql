{#- Cleaning helpers. Adapter-specific syntax lives only here (dispatch), so the models stay portable. -#}

{% macro clean_text(col) -%}
    nullif(trim({{ col }}), '')
{%- endmacro %}

{#- ISO 8601 dates and timestamps (space or T), plus the unambiguous YYYY/MM/DD and DD.MM.YYYY, as a
    timestamp in the run's time zone (var 'timezone', CRM_TIMEZONE). A timestamp that carries a zone (`Z`,
    `+02:00`, `-0500`, `+02`, or a name such as `UTC`) is that instant, converted to the run's zone before
    anything takes its date; a naive one is already in the run's zone. Anything else (for example
    03/04/2024: March or April?) is null and the row is quarantined as unparseable. -#}
{% macro parse_timestamp(col) -%}
    {{ return(adapter.dispatch('parse_timestamp')(col)) }}
{%- endmacro %}

{#- True when a timestamp text carries a zone after its time of day (Z, an offset, or a zone name). -#}
{% macro has_time_zone(text) -%}
    {{ return(adapter.dispatch('has_time_zone')(text)) }}
{%- endmacro %}

{% macro default__has_time_zone(text) -%}
    regexp_like({{ text }}, '[0-9]:[0-9][0-9](:[0-9][0-9]([.][0-9]*)?)? *[A-Za-z+-]')
{%- endmacro %}

{% macro duckdb__has_time_zone(text) -%}
    regexp_matches({{ text }}, '[0-9]:[0-9][0-9](:[0-9][0-9]([.][0-9]*)?)? *[A-Za-z+-]')
{%- endmacro %}

{#- Adapters with SQL's `at time zone` (Postgres, Snowflake, Trino). -#}
{% macro default__parse_timestamp(col) -%}
    case
        when {{ has_time_zone(clean_text(col)) }}
            then cast({{ try_cast_to(clean_text(col), 'timestamp with time zone') }} at time zone '{{ var("timezone") }}'
                      as {{ api.Column.translate_type('timestamp') }})
        else {{ try_cast_to(clean_text(col), api.Column.translate_type('timestamp')) }}
    end
{%- endmacro %}

{#- Spark: the same texts as DuckDB, as naive timestamps (timestamp_ntz) in the run's zone. Spark's own cast is
    laxer than DuckDB's (it reads `2024` as a date), so the shapes are checked first; a zoned text is read
    as an instant (to_timestamp_ltz; the session time zone is UTC) and moved to the run's zone. -#}
{% macro spark__parse_timestamp(col) -%}
    {%- set text = clean_text(col) -%}
    case
        when {{ text }} rlike '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([ T]|$)' then
            case
                when {{ text }} rlike '[0-9]:[0-9][0-9](:[0-9][0-9]([.][0-9]*)?)? *[A-Za-z+-]'
                    then cast(from_utc_timestamp(to_timestamp_ltz(regexp_replace({{ text }}, ' +([zZ+-])', '$1')),
                                                 '{{ var("timezone") }}') as timestamp_ntz)
                else to_timestamp_ntz({{ text }})
            end
        when {{ text }} rlike '^[0-9]{4}/[0-9]{2}/[0-9]{2}$' then to_timestamp_ntz({{ text }}, 'yyyy/MM/dd')
        when {{ text }} rlike '^[0-9]{2}[.][0-9]{2}[.][0-9]{4}$' then to_timestamp_ntz({{ text }}, 'dd.MM.yyyy')
    end
{%- endmacro %}

{% macro duckdb__parse_timestamp(col) -%}
    case
        when {{ has_time_zone(clean_text(col)) }}
            then timezone('{{ var("timezone") }}', try_cast(regexp_replace({{ clean_text(col) }}, ' *[zZ]$', '+00:00') as timestamptz))
        else coalesce(
            try_cast({{ clean_text(col) }} as timestamp),
            try_strptime({{ clean_text(col) }}, '%Y/%m/%d'),
            try_strptime({{ clean_text(col) }}, '%d.%m.%Y')
        )
    end
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

{% macro spark__try_cast_to(expr, data_type) -%}
    try_cast({{ expr }} as {{ data_type }})
{%- endmacro %}

{#- Numbers parse as 64-bit floats (dbt.type_float() is 32-bit on DuckDB: 7 digits, cents lost on large
    amounts). 'double' is understood by DuckDB, Spark, Snowflake and Databricks. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'crm_potential')()) }}
{%- endmacro %}

{% macro default__type_double() -%}double{%- endmacro %}

{% macro postgres__type_double() -%}double precision{%- endmacro %}

{#- A finite number, else null: "NaN", "Infinity", "-inf" and overflowing texts ("1e400") never reach a
    model (the contract quarantines them with their own reason; see rule check `finite`). -#}
{% macro parse_number(col) -%}
    {{ finite_or_null(try_cast_to(clean_text(col), type_double())) }}
{%- endmacro %}

{% macro finite_or_null(expr) -%}
    case when {{ is_finite(expr) }} then {{ expr }} end
{%- endmacro %}

{#- True for a finite number, false for NaN and +-Infinity, null for null. -#}
{% macro is_finite(expr) -%}
    {{ return(adapter.dispatch('is_finite')(expr)) }}
{%- endmacro %}

{#- NaN and infinities fail x - x = 0 under IEEE arithmetic. -#}
{% macro default__is_finite(expr) -%}
    ({{ expr }} - {{ expr }} = 0)
{%- endmacro %}

{% macro duckdb__is_finite(expr) -%}
    isfinite({{ expr }})
{%- endmacro %}

{#- A text that reads as a number but not a finite one (NaN, Infinity, an overflow). -#}
{% macro is_nonfinite_number(text) -%}
    (not {{ is_finite(try_cast_to(text, type_double())) }})
{%- endmacro %}

{#- The continuous p-quantile (0..1) of an expression over a group (the median is p = 0.5). -#}
{% macro percentile_value(expr, p) -%}
    {{ return(adapter.dispatch('percentile_value')(expr, p)) }}
{%- endmacro %}

{% macro default__percentile_value(expr, p) -%}
    percentile_cont({{ p }}) within group (order by {{ expr }})
{%- endmacro %}

{% macro duckdb__percentile_value(expr, p) -%}
    quantile_cont({{ expr }}, {{ p }})
{%- endmacro %}

{% macro spark__percentile_value(expr, p) -%}
    percentile({{ expr }}, {{ p }})
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

{#- The moment this dbt invocation started, in the run's time zone (as every parsed timestamp is): rows
    dated after it are in the future. -#}
{% macro run_started() -%}
    {%- set local = run_started_at.astimezone(modules.pytz.timezone(var('timezone'))) -%}
    cast('{{ local.strftime("%Y-%m-%d %H:%M:%S") }}' as {{ api.Column.translate_type('timestamp') }})
{%- endmacro %}

{#- CRM_EARLIEST_DATE: anything dated before it is implausible. -#}
{% macro earliest_date() -%}
    cast('{{ var("earliest_date") }}' as date)
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
