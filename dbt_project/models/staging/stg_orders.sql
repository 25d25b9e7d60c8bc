-- One row per order_id: the orders that keep the contract (see stg_orders_checked), de-duplicated
-- (exact duplicates only; conflicting ones are quarantined), up to the end of the as-of date.
-- A missing status means completed; only completed orders count as purchases downstream.

with checked as (

    select * from {{ ref('stg_orders_checked') }}
    where reject_reason is null

),

in_view as (

    select * from checked
    where ordered_at < {{ as_of_end() }}

),

deduplicated as (

    select
        *,
        row_number() over (partition by order_id order by _source_row desc) as record_rank

    from in_view

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        cast(ordered_at as date) as order_date,
        amount,
        status,
        currency,
        product_category,
        quantity,
        sales_channel

    from deduplicated
    where record_rank = 1

)

select * from final
