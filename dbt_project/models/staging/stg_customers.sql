-- One row per customer_id, typed and cleaned. Duplicates: the latest record updated by the end of the
-- as-of date wins (records updated later are used only when no earlier one exists); created_at is the
-- earliest seen for that id. Customers created after the as-of date are out of view.

with source as (

    select * from {{ source('raw', 'customers') }}

),

renamed as (

    select
        {{ clean_text('customer_id') }} as customer_id,
        {{ parse_timestamp('created_at') }} as created_at,
        {{ parse_timestamp('updated_at') }} as updated_at,
        {{ normalise_email('email') }} as email,
        {{ normalise_phone('phone') }} as phone,
        {{ clean_text('full_name') }} as full_name,
        {{ normalise_country('country') }} as country,
        {{ clean_text('region') }} as region,
        {{ clean_text('city') }} as city,
        {{ clean_text('postal_code') }} as postal_code,
        cast({{ parse_timestamp('birth_date') }} as date) as birth_date,
        lower({{ clean_text('gender') }}) as gender,
        lower({{ clean_text('acquisition_channel') }}) as acquisition_channel,
        {{ clean_text('company_name') }} as company_name,
        {{ clean_text('company_size') }} as company_size,
        lower({{ clean_text('industry') }}) as industry,
        {{ parse_bool('marketing_consent') }} as marketing_consent,
        lower({{ clean_text('preferred_channel') }}) as preferred_channel,
        _source_row

    from source

),

in_view as (

    select * from renamed
    where customer_id is not null
      and created_at < {{ as_of_end() }}

),

ranked as (

    select
        *,
        min(created_at) over (partition by customer_id) as first_created_at,
        row_number() over (
            partition by customer_id
            order by
                case when updated_at is null or updated_at < {{ as_of_end() }} then 0 else 1 end,
                case when updated_at is null or updated_at < {{ as_of_end() }} then updated_at end desc nulls last,
                updated_at,
                _source_row desc
        ) as record_rank,
        count(*) over (partition by customer_id) as n_source_records

    from in_view

),

final as (

    select
        customer_id,
        first_created_at as created_at,
        updated_at,
        email,
        phone,
        full_name,
        country,
        region,
        city,
        postal_code,
        birth_date,
        gender,
        acquisition_channel,
        company_name,
        company_size,
        industry,
        marketing_consent,
        preferred_channel,
        n_source_records

    from ranked
    where record_rank = 1

)

select * from final
