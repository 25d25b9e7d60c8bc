-- Per cutoff, customer and product category: completed purchases, spend, recency and share of the
-- customer's purchases (category mix; the input for next-category propensity), and the number of
-- categories the customer has bought.
--
-- Built to scale (macros/cutoffs.sql): the purchases are summarised per customer and category for all
-- cutoffs in one pass, one column per figure and cutoff; each cutoff's row then picks its columns.

{%- set cutoff_dates = feature_cutoff_dates() %}

with purchases as (

    select customer_id, product_category, ordered_at, order_date, amount
    from {{ ref('stg_orders') }}
    where status = 'completed'
      and product_category is not null

),

by_category as (

    select
        customer_id,
        product_category,
        min(order_date) as first_order_date,
        {%- for cutoff in cutoff_dates %}
        {%- set seen = 'order_date <= ' ~ date_literal(cutoff) %}
        count(case when {{ seen }} then 1 end) as n_orders_{{ loop.index }},
        {{ money_sum("case when " ~ seen ~ " then amount end") }} as spend_{{ loop.index }},
        max(case when {{ seen }} then ordered_at end) as last_ordered_at_{{ loop.index }}{{ "," if not loop.last }}
        {%- endfor %}

    from purchases
    group by customer_id, product_category

),

cutoffs as (

    select cutoff_date from {{ ref('int_cutoffs') }}

),

per_cutoff as (

    -- each cutoff's columns, for the categories bought by then
    select
        cutoffs.cutoff_date,
        by_category.customer_id,
        by_category.product_category,
        {{ at_cutoff('by_category.n_orders', cutoff_dates, 'cutoffs.cutoff_date') }} as n_orders,
        {{ at_cutoff('by_category.spend', cutoff_dates, 'cutoffs.cutoff_date') }} as spend,
        {{ at_cutoff('by_category.last_ordered_at', cutoff_dates, 'cutoffs.cutoff_date') }} as last_ordered_at

    from by_category
    inner join cutoffs on by_category.first_order_date <= cutoffs.cutoff_date

),

final as (

    select
        cutoff_date,
        customer_id,
        product_category,
        n_orders,
        spend,
        last_ordered_at,
        {{ ratio('n_orders', 'sum(n_orders) over (partition by cutoff_date, customer_id)') }} as order_share,
        row_number() over (
            partition by cutoff_date, customer_id order by n_orders desc, last_ordered_at desc, product_category
        ) as category_rank,
        count(*) over (partition by cutoff_date, customer_id) as n_categories

    from per_cutoff

)

select * from final
