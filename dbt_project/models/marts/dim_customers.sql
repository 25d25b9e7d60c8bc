-- One row per known customer (created by the end of the as-of date), with derived demographics.
-- Holds PII for internal joins only; published tables never carry email, phone or name.

with customers as (

    select * from {{ ref('stg_customers') }}

),

derived as (

    select
        *,
        {{ days_before('created_at', as_of_date()) }} as tenure_days

    from customers

),

final as (

    select
        customer_id,
        created_at,
        updated_at,
        email,
        phone,
        full_name,
        country,
        region,
        city,
        postal_code,
        birth_date,
        {{ age_band('birth_date', as_of_date()) }} as age_band,
        gender,
        acquisition_channel,
        company_name,
        company_size,
        industry,
        company_name is not null as is_b2b,
        marketing_consent,
        preferred_channel,
        tenure_days,
        n_source_records

    from derived

)

select * from final
