{#- Cleaning helpers. Adapter-specific syntax lives only here (dispatch), so the models stay portable. -#}

{% macro clean_text(col) -%}
    nullif(trim({{ col }}), '')
{%- endmacro %}

{% macro parse_timestamp(col) -%}
    {{ dbt.safe_cast(clean_text(col), api.Column.translate_type('timestamp')) }}
{%- endmacro %}

{% macro parse_number(col) -%}
    {{ dbt.safe_cast(clean_text(col), dbt.type_float()) }}
{%- endmacro %}

{% macro parse_int(col) -%}
    {{ dbt.safe_cast(clean_text(col), dbt.type_int()) }}
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
