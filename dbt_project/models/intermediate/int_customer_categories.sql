-- Per cutoff, customer and product category: completed purchases, spend, recency and share of the
-- customer's purchases (category mix; the input for next-category propensity).

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}

),

purchases as (

    select
        cutoffs.cutoff_date,
        stg_orders.*

    from {{ ref('stg_orders') }} as stg_orders
    inner join cutoffs on stg_orders.ordered_at < cutoffs.cutoff_end
    where stg_orders.status = 'completed'
      and stg_orders.product_category is not null

),

by_category as (

    select
        cutoff_date,
        customer_id,
        product_category,
        count(*) as n_orders,
        {{ money_sum('amount') }} as spend,
        max(ordered_at) as last_ordered_at

    from purchases
    group by cutoff_date, customer_id, product_category

),

final as (

    select
        cutoff_date,
        customer_id,
        product_category,
        n_orders,
        spend,
        last_ordered_at,
        n_orders * 1.0 / sum(n_orders) over (partition by cutoff_date, customer_id) as order_share,
        row_number() over (
            partition by cutoff_date, customer_id order by n_orders desc, last_ordered_at desc, product_category
        ) as category_rank

    from by_category

)

select * from final
