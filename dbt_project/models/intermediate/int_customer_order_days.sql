-- One row per customer and order date: the day's orders counted by status and summed. A purchase day (a
-- day with a completed order) is the unit of the BTYD summary, and every window of the purchase features
-- and outcomes starts at midnight, so the per-cutoff models (int_customer_orders, customer_outcomes) read
-- this instead of the orders.

with orders as (

    select * from {{ ref('stg_orders') }}

),

order_days as (

    select
        customer_id,
        order_date,
        count(case when status = 'completed' then 1 end) as n_purchases,
        count(case when status = 'cancelled' then 1 end) as n_cancelled,
        count(case when status = 'refunded' then 1 end) as n_refunded,
        -- the completed orders' amounts, summed as they are (money_sum rounds where the days are summed up)
        sum(case when status = 'completed' then amount else 0 end) as purchase_amount,
        -- the day's spend as the Gamma-Gamma model sees it (null on a day without a purchase)
        {{ money_sum("case when status = 'completed' then amount end") }} as day_spend

    from orders
    group by customer_id, order_date

),

final as (

    select
        *,
        min(case when n_purchases > 0 then order_date end) over (partition by customer_id) as first_purchase_date

    from order_days

)

select * from final
