-- Raw customers rows that break the data contract: kept, never dropped, with the rule they break.

{%- set contract = ['customer_id', 'created_at', 'updated_at', 'email', 'phone', 'full_name', 'country', 'region', 'city',
                    'postal_code', 'birth_date', 'gender', 'acquisition_channel', 'company_name', 'company_size',
                    'industry', 'marketing_consent', 'preferred_channel'] %}

with checked as (

    select _source_row, reject_reason from {{ ref('stg_customers_checked') }}
    where reject_reason is not null

),

source as (

    select * from {{ source('raw', 'customers') }}

),

final as (

    select
        '{{ var("run_id") }}' as run_id,
        'customers' as entity,
        source._source_file as source_file,
        source._source_row as source_row,
        checked.reject_reason as rule,
        {{ raw_row(contract, 'source') }} as raw_row

    from checked
    inner join source on checked._source_row = source._source_row

)

select * from final
