-- One row per customer_id: the records that keep the contract (see stg_customers_checked). Duplicates: the latest record updated by the end of the
-- as-of date wins (records updated later are used only when no earlier one exists); created_at is the
-- earliest seen for that id. Customers created after the as-of date are out of view.

with renamed as (

    select * from {{ ref('stg_customers_checked') }}
    where reject_reason is null

),

in_view as (

    select * from renamed
    where created_at < {{ as_of_end() }}

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
