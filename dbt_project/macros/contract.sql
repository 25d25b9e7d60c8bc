{#- The source data contract (var 'contract' in dbt_project.yml) as SQL: one declaration per entity, from
    which the *_checked model, the quarantine model and the contract test are generated. A rule change is
    one line of the declaration; data_quality/contract.py reads the same declaration for Python.

    contract_checked_model(entity): every raw row with its typed columns and `reject_reason`, the reason of
    the first rule it breaks (null when it keeps the contract). Row rules look at the row alone; three rule
    kinds look further: known_customer and not_before_customer_created join the customers (their file, and
    the earliest created_at among their records that keep the contract), no_conflicting_duplicates compares
    the rows sharing a key, and not_outlier compares an amount with the amounts of the rows that pass every
    other rule (which is why it comes last). -#}

{#- The output name of a contract column. -#}
{% macro contract_alias(columns, name) -%}
    {{ return(columns[name].get('as', name)) }}
{%- endmacro %}

{#- A raw text column typed by its contract type (and its default when missing). -#}
{% macro contract_typed(name, column) -%}
    {%- set kind = column['type'] -%}
    {%- if kind == 'text' -%}{%- set expr = clean_text(name) -%}
    {%- elif kind == 'lower' -%}{%- set expr = 'lower(' ~ clean_text(name) ~ ')' -%}
    {%- elif kind == 'upper' -%}{%- set expr = 'upper(' ~ clean_text(name) ~ ')' -%}
    {%- elif kind == 'email' -%}{%- set expr = normalise_email(name) -%}
    {%- elif kind == 'phone' -%}{%- set expr = normalise_phone(name) -%}
    {%- elif kind == 'country' -%}{%- set expr = normalise_country(name) -%}
    {%- elif kind == 'timestamp' -%}{%- set expr = parse_timestamp(name) -%}
    {%- elif kind == 'date' -%}{%- set expr = 'cast(' ~ parse_timestamp(name) ~ ' as date)' -%}
    {%- elif kind == 'number' -%}{%- set expr = parse_number(name) -%}
    {%- elif kind == 'integer' -%}{%- set expr = parse_int(name) -%}
    {%- elif kind == 'bool' -%}{%- set expr = parse_bool(name) -%}
    {%- else -%}{{ exceptions.raise_compiler_error("contract: column " ~ name ~ " has an unknown type " ~ kind) }}
    {%- endif -%}
    {%- if column.get('default') is not none -%}
        coalesce({{ expr }}, '{{ column["default"] }}')
    {%- elif column.get('default_var') -%}
        coalesce({{ expr }}, '{{ var(column["default_var"]) }}')
    {%- else -%}
        {{ expr }}
    {%- endif -%}
{%- endmacro %}

{#- SQL that is true when the row breaks `rule`, on the CTE `parsed` (typed columns and the clean texts
    `<column>__text`) joined to `customers_lookup` and `conflicting_keys`. -#}
{% macro contract_breaks(rule, columns, key) -%}
    {%- set check = rule['check'] -%}
    {%- set name = rule.get('column') -%}
    {%- set typed = 'parsed.' ~ contract_alias(columns, name) if name else none -%}
    {%- set text = 'parsed.' ~ name ~ '__text' if name else none -%}
    {%- if check == 'present' -%} {{ text }} is null
    {%- elif check == 'parses' -%} ({{ text }} is not null and {{ typed }} is null)
    {%- elif check == 'finite' -%} {{ is_nonfinite_number(text) }}
    {%- elif check == 'min' -%} {{ typed }} < {{ rule['value'] }}
    {%- elif check == 'in_range' -%}
        ({{ text }} is not null and ({{ typed }} is null or {{ typed }} < {{ rule['min'] }} or {{ typed }} > {{ rule['max'] }}))
    {%- elif check == 'accepted' -%}
        {{ typed }} not in ({% for v in rule['values'] %}'{{ v }}'{{ ", " if not loop.last }}{% endfor %})
    {%- elif check == 'not_future' -%} {{ typed }} > {{ run_started() }}
    {%- elif check == 'not_before_earliest' -%} {{ typed }} < {{ earliest_date() }}
    {%- elif check == 'known_customer' -%} customers_lookup.customer_id is null
    {%- elif check == 'not_before_customer_created' -%}
        {{ typed }} < {{ add_days('customers_lookup.created_at', -1 * (var('created_at_tolerance_days') | int)) }}
    {%- elif check == 'no_conflicting_duplicates' -%} conflicting_keys.{{ key }} is not null
    {%- else -%}{{ exceptions.raise_compiler_error("contract: unknown check " ~ check) }}
    {%- endif -%}
{%- endmacro %}

{#- A typed value as a grouping key (null as ''), for "the same updated_at". -#}
{% macro contract_group_key(expr) -%}
    coalesce(cast({{ expr }} as {{ dbt.type_string() }}), '')
{%- endmacro %}

{% macro contract_checked_model(entity) -%}
{%- set spec = var('contract')[entity] -%}
{%- set columns = spec['columns'] -%}
{%- set key = spec['key'] -%}
{%- set raw_columns = columns.keys() | list -%}
{%- set row_rules = [] -%}{%- set outlier_rules = [] -%}{%- set text_columns = [] -%}
{%- set lookup = [] -%}{%- set duplicates = [] -%}
{%- for rule in spec['rules'] -%}
    {%- if rule['check'] == 'not_outlier' -%}{%- do outlier_rules.append(rule) -%}
    {%- else -%}{%- do row_rules.append(rule) -%}{%- endif -%}
    {%- if rule['check'] in ('present', 'parses', 'finite', 'in_range') and rule['column'] not in text_columns -%}
        {%- do text_columns.append(rule['column']) -%}
    {%- endif -%}
    {%- if rule['check'] in ('known_customer', 'not_before_customer_created') -%}{%- do lookup.append(rule) -%}{%- endif -%}
    {%- if rule['check'] == 'no_conflicting_duplicates' -%}{%- do duplicates.append(rule) -%}{%- endif -%}
{%- endfor -%}
{%- set same = duplicates[0].get('same', []) if duplicates else [] -%}
{%- set parsed_columns = ['_source_file', '_source_row'] -%}
{%- for name in raw_columns -%}
    {%- do parsed_columns.append(contract_typed(name, columns[name]) ~ ' as ' ~ contract_alias(columns, name)) -%}
{%- endfor -%}
{%- for name in text_columns -%}
    {%- do parsed_columns.append(clean_text(name) ~ ' as ' ~ name ~ '__text') -%}
{%- endfor -%}

with source as (

    select * from {{ source('raw', entity) }}

),

parsed as (

    select
        {{ parsed_columns | join(',\n        ') }}

    from source

),
{%- if lookup %}

customers_lookup as (

    -- every customer_id in the customers file, with the earliest created_at of its records that keep the contract
    select known.customer_id, created.created_at
    from (
        select distinct {{ clean_text('customer_id') }} as customer_id
        from {{ source('raw', 'customers') }}
    ) as known
    left join (
        select customer_id, min(created_at) as created_at
        from {{ ref('stg_customers_checked') }}
        where reject_reason is null
        group by customer_id
    ) as created on known.customer_id = created.customer_id

),
{%- endif %}
{%- if duplicates %}

repeated_keys as (

    {%- if same %}
    select {{ key }}{% for c in same %}, {{ contract_group_key(contract_alias(columns, c)) }} as {{ c }}__key{% endfor %}
    from parsed
    where {{ key }} is not null
    group by {{ key }}{% for c in same %}, {{ contract_group_key(contract_alias(columns, c)) }}{% endfor %}
    {%- else %}
    -- typed from the raw rows, as parsed types it: parsed then has one reader and streams (a CTE read twice is
    -- kept whole: 20M rows of text spilled to disk at a million customers)
    {%- set key_typed = contract_typed(key, columns[key]) %}
    select {{ key_typed }} as {{ key }}
    from {{ source('raw', entity) }}
    where {{ key_typed }} is not null
    group by {{ key_typed }}
    {%- endif %}
    having count(*) > 1

),

conflicting_keys as (

    -- only repeated keys are hashed: comparing whole rows is the expensive part
    {%- if same %}
    select repeated_keys.{{ key }}{% for c in same %}, repeated_keys.{{ c }}__key{% endfor %}
    from parsed
    inner join {{ source('raw', entity) }} as source on parsed._source_row = source._source_row
    inner join repeated_keys
        on parsed.{{ key }} = repeated_keys.{{ key }}
        {%- for c in same %}
        and {{ contract_group_key('parsed.' ~ contract_alias(columns, c)) }} = repeated_keys.{{ c }}__key
        {%- endfor %}
    group by repeated_keys.{{ key }}{% for c in same %}, repeated_keys.{{ c }}__key{% endfor %}
    {%- else %}
    select {{ clean_text('source.' ~ key) }} as {{ key }}
    from {{ source('raw', entity) }} as source
    inner join repeated_keys on {{ clean_text('source.' ~ key) }} = repeated_keys.{{ key }}
    group by {{ clean_text('source.' ~ key) }}
    {%- endif %}
    having count(distinct {{ row_hash(raw_columns, 'source') }}) > 1

),
{%- endif %}

checked as (

    select
        parsed.*,
        case
            {%- for rule in row_rules %}
            when {{ contract_breaks(rule, columns, key) }} then '{{ escape_single_quotes(rule["reason"]) }}'
            {%- endfor %}
        end as reject_reason

    from parsed
    {%- if lookup %}
    left join customers_lookup on parsed.customer_id = customers_lookup.customer_id
    {%- endif %}
    {%- if duplicates %}
    left join conflicting_keys
        on parsed.{{ key }} = conflicting_keys.{{ key }}
        {%- for c in same %}
        and {{ contract_group_key('parsed.' ~ contract_alias(columns, c)) }} = conflicting_keys.{{ c }}__key
        {%- endfor %}
    {%- endif %}

)
{%- for rule in outlier_rules %}
{%- set value = contract_alias(columns, rule['column']) %},

{{ value }}_median as (

    select {{ percentile_value(value, 0.5) }} as median_value
    from checked
    where reject_reason is null and {{ value }} > 0

),

{{ value }}_bound as (

    -- factor x the 99.9th percentile of the valid positive values up to 100 x factor x their median
    select {{ var('amount_outlier_factor') }} * {{ percentile_value('checked.' ~ value, 0.999) }} as bound
    from checked
    cross join {{ value }}_median
    where checked.reject_reason is null and checked.{{ value }} > 0
      and checked.{{ value }} <= 100 * {{ var('amount_outlier_factor') }} * {{ value }}_median.median_value

)
{%- endfor %}

select
    {%- for name in ['_source_file', '_source_row'] + raw_columns %}
    checked.{{ contract_alias(columns, name) if name in columns else name }},
    {%- endfor %}
    {%- if outlier_rules %}
    coalesce(
        checked.reject_reason
        {%- for rule in outlier_rules %}
        {%- set value = contract_alias(columns, rule['column']) %},
        case when checked.{{ value }} > {{ value }}_bound.bound then '{{ escape_single_quotes(rule["reason"]) }}' end
        {%- endfor %}
    ) as reject_reason
    {%- else %}
    checked.reject_reason
    {%- endif %}

from checked
{%- for rule in outlier_rules %}
cross join {{ contract_alias(columns, rule['column']) }}_bound
{%- endfor %}
{%- endmacro %}


{#- The raw rows that break the contract, with the rule and the raw record, plus the lines the ingest could
    not read as records (raw.<entity>_rejects, when the ingest made one): nothing is dropped silently. -#}
{% macro contract_quarantine_model(entity) -%}
{%- set spec = var('contract')[entity] -%}
{%- set raw = source('raw', entity) -%}
{%- set rejects = adapter.get_relation(database=raw.database, schema=raw.schema, identifier=entity ~ '_rejects')
    if execute else none -%}

with checked as (

    select _source_row, reject_reason from {{ ref('stg_' ~ entity ~ '_checked') }}
    where reject_reason is not null

),

source as (

    select * from {{ raw }}

),

final as (

    select
        '{{ var("run_id") }}' as run_id,
        '{{ entity }}' as entity,
        source._source_file as source_file,
        source._source_row as source_row,
        cast(null as {{ dbt.type_bigint() }}) as source_line,
        checked.reject_reason as rule,
        {{ raw_row(spec['columns'].keys() | list, 'source') }} as raw_row

    from checked
    inner join source on checked._source_row = source._source_row
    {%- if rejects %}

    union all

    select
        '{{ var("run_id") }}' as run_id,
        '{{ entity }}' as entity,
        _source_file as source_file,
        cast(null as {{ dbt.type_bigint() }}) as source_row,
        cast(_source_line as {{ dbt.type_bigint() }}) as source_line,
        reject_reason as rule,
        raw_line as raw_row

    from {{ rejects }}
    {%- endif %}

)

select * from final
{%- endmacro %}


{#- SQL that is true when a row of a table built from the contract (typed columns, named as the contract
    says) breaks a rule that can be seen on the row alone. -#}
{% macro contract_violated(rule, columns) -%}
    {%- set check = rule['check'] -%}
    {%- set typed = contract_alias(columns, rule['column']) if rule.get('column') else none -%}
    {%- if check == 'present' -%} {{ typed }} is null
    {%- elif check == 'finite' -%} not {{ is_finite(typed) }}
    {%- elif check == 'min' -%} {{ typed }} < {{ rule['value'] }}
    {%- elif check == 'in_range' -%} ({{ typed }} < {{ rule['min'] }} or {{ typed }} > {{ rule['max'] }})
    {%- elif check == 'accepted' -%}
        {{ typed }} not in ({% for v in rule['values'] %}'{{ v }}'{{ ", " if not loop.last }}{% endfor %})
    {%- elif check == 'not_before_earliest' -%} {{ typed }} < {{ earliest_date() }}
    {%- else -%} false
    {%- endif -%}
{%- endmacro %}
