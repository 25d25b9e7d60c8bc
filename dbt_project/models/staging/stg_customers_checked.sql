-- Every raw customer record with its typed values and, when it breaks the contract, the rule it breaks
-- (reject_reason). Several records per customer_id are normal (the latest updated_at wins); records
-- of one customer with the same updated_at but different content conflict and are quarantined.

{%- set contract = ['customer_id', 'created_at', 'updated_at', 'email', 'phone', 'full_name', 'country', 'region', 'city',
                    'postal_code', 'birth_date', 'gender', 'acquisition_channel', 'company_name', 'company_size',
                    'industry', 'marketing_consent', 'preferred_channel'] %}

with source as (

    select * from {{ source('raw', 'customers') }}

),

parsed as (

    select
        _source_file,
        _source_row,
        {{ clean_text('customer_id') }} as customer_id,
        {{ clean_text('created_at') }} as created_at_text,
        {{ parse_timestamp('created_at') }} as created_at,
        {{ parse_timestamp('updated_at') }} as updated_at,
        {{ unparseable('updated_at', parse_timestamp('updated_at')) }} as updated_at_unparseable,
        {{ normalise_email('email') }} as email,
        {{ normalise_phone('phone') }} as phone,
        {{ clean_text('full_name') }} as full_name,
        {{ normalise_country('country') }} as country,
        {{ clean_text('region') }} as region,
        {{ clean_text('city') }} as city,
        {{ clean_text('postal_code') }} as postal_code,
        cast({{ parse_timestamp('birth_date') }} as date) as birth_date,
        {{ unparseable('birth_date', parse_timestamp('birth_date')) }} as birth_date_unparseable,
        lower({{ clean_text('gender') }}) as gender,
        lower({{ clean_text('acquisition_channel') }}) as acquisition_channel,
        {{ clean_text('company_name') }} as company_name,
        {{ clean_text('company_size') }} as company_size,
        lower({{ clean_text('industry') }}) as industry,
        {{ parse_bool('marketing_consent') }} as marketing_consent,
        {{ unparseable('marketing_consent', parse_bool('marketing_consent')) }} as marketing_consent_unparseable,
        lower({{ clean_text('preferred_channel') }}) as preferred_channel

    from source

),

repeated_records as (

    select customer_id, coalesce(cast(updated_at as {{ dbt.type_string() }}), '') as updated_key
    from parsed
    where customer_id is not null
    group by customer_id, coalesce(cast(updated_at as {{ dbt.type_string() }}), '')
    having count(*) > 1

),

conflicting_records as (

    -- only repeated (customer_id, updated_at) pairs are hashed: comparing whole rows is the expensive part
    select repeated_records.customer_id, repeated_records.updated_key
    from parsed
    inner join source on parsed._source_row = source._source_row
    inner join repeated_records
        on parsed.customer_id = repeated_records.customer_id
        and coalesce(cast(parsed.updated_at as {{ dbt.type_string() }}), '') = repeated_records.updated_key
    group by repeated_records.customer_id, repeated_records.updated_key
    having count(distinct {{ row_hash(contract, 'source') }}) > 1

),

checked as (

    select
        parsed.*,
        case
            when parsed.customer_id is null then 'missing customer_id'
            when parsed.created_at_text is null then 'missing created_at'
            when parsed.created_at is null then 'unparseable created_at (use ISO 8601, e.g. 2024-01-31)'
            when parsed.created_at > {{ run_started() }} then 'created_at in the future'
            when parsed.updated_at_unparseable then 'unparseable updated_at (use ISO 8601)'
            when parsed.updated_at > {{ run_started() }} then 'updated_at in the future'
            when parsed.birth_date_unparseable then 'unparseable birth_date (use ISO 8601)'
            when parsed.birth_date > {{ run_started() }} then 'birth_date in the future'
            when parsed.marketing_consent_unparseable then 'unparseable marketing_consent (true or false)'
            when conflicting_records.customer_id is not null
                then 'duplicate customer_id with conflicting content and the same updated_at'
        end as reject_reason

    from parsed
    left join conflicting_records
        on parsed.customer_id = conflicting_records.customer_id
        and coalesce(cast(parsed.updated_at as {{ dbt.type_string() }}), '') = conflicting_records.updated_key

)

select * from checked
