-- One row per known customer (created by the end of the as-of date), with derived demographics.
-- Holds PII for internal joins only; published tables never carry email, phone or name.

with customers as (

    select * from {{ ref('stg_customers') }}

),

derived as (

    select
        *,
        {{ dbt.datediff('birth_date', as_of_date(), 'year') }} as age_years,
        {{ days_before_as_of('created_at') }} as tenure_days

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
        case
            when age_years is null or age_years < 0 then 'unknown'
            when age_years < 25 then '18-24'
            when age_years < 35 then '25-34'
            when age_years < 45 then '35-44'
            when age_years < 55 then '45-54'
            when age_years < 65 then '55-64'
            else '65+'
        end as age_band,
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
