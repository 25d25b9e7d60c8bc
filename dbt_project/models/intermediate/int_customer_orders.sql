-- Per cutoff and customer: purchase history summarised as of the cutoff. Purchases are completed
-- orders; the BTYD summary (frequency, recency, T) counts purchase days, as the BG/NBD model expects.
-- The number of product categories bought comes with the category mix (int_customer_categories).
--
-- Built to scale: the orders are reduced once to customer days (int_customer_order_days), and each cutoff
-- (macros/cutoffs.sql, known when the SQL is compiled) sums up the days until it, so no order is joined
-- to the cutoffs. Each cutoff's select reads the day table itself, not a CTE: DuckDB copies a CTE that is
-- read more than once into memory. One aggregation per cutoff keeps each one's memory to its customers
-- (all cutoffs in one aggregation, one column per cutoff, spills to disk at a million customers).

{%- set cutoff_dates = feature_cutoff_dates() %}
{%- set bigint = dbt.type_bigint() %}

with per_cutoff as (

    {%- for cutoff in cutoff_dates %}
    {%- set last_90d = date_within('order_date', cutoff, -89, 0) %}
    {%- set prev_90d = date_within('order_date', cutoff, -179, -90) %}
    {%- set last_365d = date_within('order_date', cutoff, -364, 0) %}

    select
        {{ date_literal(cutoff) }} as cutoff_date,
        customer_id,
        cast(sum(n_purchases) as {{ bigint }}) as n_orders,
        count(case when n_purchases > 0 then 1 end) as n_purchase_days,
        min(case when n_purchases > 0 then order_date end) as first_purchase_date,
        max(case when n_purchases > 0 then order_date end) as last_purchase_date,
        {{ money_sum('purchase_amount') }} as monetary_total,
        {{ money_mean('case when order_date > order_days.first_purchase_date then day_spend end') }} as repeat_spend_mean,
        cast(sum(n_cancelled) as {{ bigint }}) as n_cancelled,
        cast(sum(n_refunded) as {{ bigint }}) as n_refunded,
        cast(sum(case when {{ last_90d }} then n_purchases else 0 end) as {{ bigint }}) as orders_last_90d,
        cast(sum(case when {{ prev_90d }} then n_purchases else 0 end) as {{ bigint }}) as orders_prev_90d,
        {{ money_sum("case when " ~ last_90d ~ " then purchase_amount else 0 end") }} as spend_last_90d,
        {{ money_sum("case when " ~ prev_90d ~ " then purchase_amount else 0 end") }} as spend_prev_90d,
        cast(sum(case when {{ last_365d }} then n_purchases else 0 end) as {{ bigint }}) as orders_last_365d,
        {{ money_sum("case when " ~ last_365d ~ " then purchase_amount else 0 end") }} as spend_last_365d

    from {{ ref('int_customer_order_days') }} as order_days
    where order_date <= {{ date_literal(cutoff) }}
    group by customer_id
    {%- if not loop.last %}

    union all
    {%- endif %}
    {%- endfor %}

),

final as (

    select
        cutoff_date,
        customer_id,
        n_orders,
        n_purchase_days,
        first_purchase_date,
        last_purchase_date,
        monetary_total,
        monetary_total / nullif(n_orders, 0) as monetary_mean,
        repeat_spend_mean,
        n_cancelled,
        n_refunded,
        orders_last_90d,
        orders_prev_90d,
        spend_last_90d,
        spend_prev_90d,
        orders_last_365d,
        spend_last_365d

    from per_cutoff

)

select * from final
