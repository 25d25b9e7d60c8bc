{#- Age band of a birth date at the date in `anchor`. -#}
{% macro age_band(birth_date, anchor) -%}
    case
        when {{ birth_date }} is null or {{ dbt.datediff(birth_date, anchor, 'year') }} < 0 then 'unknown'
        when {{ dbt.datediff(birth_date, anchor, 'year') }} < 25 then '18-24'
        when {{ dbt.datediff(birth_date, anchor, 'year') }} < 35 then '25-34'
        when {{ dbt.datediff(birth_date, anchor, 'year') }} < 45 then '35-44'
        when {{ dbt.datediff(birth_date, anchor, 'year') }} < 55 then '45-54'
        when {{ dbt.datediff(birth_date, anchor, 'year') }} < 65 then '55-64'
        else '65+'
    end
{%- endmacro %}
