-- Per cutoff and customer: purchase history summarised as of the cutoff. Purchases are completed
-- orders; the BTYD summary (frequency, recency, T) counts purchase days, as the BG/NBD model expects.

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}

),

orders as (

    select
        cutoffs.cutoff_date,
        stg_orders.*

    from {{ ref('stg_orders') }} as stg_orders
    inner join cutoffs on stg_orders.ordered_at < cutoffs.cutoff_end

),

purchases as (

    select * from orders
    where status = 'completed'

),

purchase_days as (

    select
        cutoff_date,
        customer_id,
        order_date,
        {{ money_sum('amount') }} as day_spend

    from purchases
    group by cutoff_date, customer_id, order_date

),

first_purchase as (

    select cutoff_date, customer_id, min(order_date) as first_purchase_date
    from purchase_days
    group by cutoff_date, customer_id

),

day_stats as (

    select
        purchase_days.cutoff_date,
        purchase_days.customer_id,
        count(*) as n_purchase_days,
        min(purchase_days.order_date) as first_purchase_date,
        max(purchase_days.order_date) as last_purchase_date,
        {{ money_mean('case when purchase_days.order_date > first_purchase.first_purchase_date
                 then purchase_days.day_spend end') }} as repeat_spend_mean

    from purchase_days
    inner join first_purchase
        on purchase_days.cutoff_date = first_purchase.cutoff_date
        and purchase_days.customer_id = first_purchase.customer_id
    group by purchase_days.cutoff_date, purchase_days.customer_id

),

order_stats as (

    select
        cutoff_date,
        customer_id,
        sum(case when status = 'completed' then 1 else 0 end) as n_orders,
        {{ money_sum("case when status = 'completed' then amount else 0 end") }} as monetary_total,
        {{ money_mean("case when status = 'completed' then amount end") }} as monetary_mean,
        sum(case when status = 'cancelled' then 1 else 0 end) as n_cancelled,
        sum(case when status = 'refunded' then 1 else 0 end) as n_refunded,
        sum(case when status = 'completed' and ordered_at >= {{ window_start(90) }} then 1 else 0 end) as orders_last_90d,
        sum(case when status = 'completed' and ordered_at >= {{ window_start(180) }}
                  and ordered_at < {{ window_start(90) }} then 1 else 0 end) as orders_prev_90d,
        {{ money_sum("case when status = 'completed' and ordered_at >= " ~ window_start(90) ~ " then amount else 0 end") }} as spend_last_90d,
        {{ money_sum("case when status = 'completed' and ordered_at >= " ~ window_start(180)
                  ~ " and ordered_at < " ~ window_start(90) ~ " then amount else 0 end") }} as spend_prev_90d,
        sum(case when status = 'completed' and ordered_at >= {{ window_start(365) }} then 1 else 0 end) as orders_last_365d,
        {{ money_sum("case when status = 'completed' and ordered_at >= " ~ window_start(365) ~ " then amount else 0 end") }} as spend_last_365d,
        count(distinct case when status = 'completed' then product_category end) as n_categories

    from orders
    group by cutoff_date, customer_id

),

final as (

    select
        order_stats.cutoff_date,
        order_stats.customer_id,
        order_stats.n_orders,
        coalesce(day_stats.n_purchase_days, 0) as n_purchase_days,
        day_stats.first_purchase_date,
        day_stats.last_purchase_date,
        order_stats.monetary_total,
        order_stats.monetary_mean,
        day_stats.repeat_spend_mean,
        order_stats.n_cancelled,
        order_stats.n_refunded,
        order_stats.orders_last_90d,
        order_stats.orders_prev_90d,
        order_stats.spend_last_90d,
        order_stats.spend_prev_90d,
        order_stats.orders_last_365d,
        order_stats.spend_last_365d,
        order_stats.n_categories

    from order_stats
    left join day_stats
        on order_stats.cutoff_date = day_stats.cutoff_date
        and order_stats.customer_id = day_stats.customer_id

)

select * from final
