-- Per back-dated cutoff and customer: what happened after the cutoff, for training labels and
-- back-tests (the value window is the value models' back-test window, the CLV horizon unless the
-- history is shorter: see ml/windows.py). A window counts only when it ends by the as-of date (`*_window_complete`); the run
-- never looks past the as-of date.
--
-- Built to scale (macros/cutoffs.sql): the purchase days (int_customer_order_days) are summarised per
-- customer for all back-dated cutoffs in one pass, one column per figure and cutoff; each customer's row
-- for a cutoff picks that cutoff's columns. No order is joined to the cutoffs.

{%- set cutoff_dates = backdated_cutoff_dates() %}
{%- if not cutoff_dates %}
    {#- no back-dated cutoff, so no customer row: the as-of date's columns (all empty) keep the types -#}
    {%- set cutoff_dates = feature_cutoff_dates() %}
{%- endif %}
{%- set churn_days = var('churn_horizon_days') | int %}
{%- set value_days = var('value_window_days') | int %}

with customers as (

    select as_of_date as cutoff_date, customer_id
    from {{ ref('customer_features_history') }}
    where as_of_date < {{ as_of_date() }}

),

purchase_days as (

    select customer_id, order_date, n_purchases, purchase_amount
    from {{ ref('int_customer_order_days') }}
    where n_purchases > 0
      and order_date > {{ date_literal(cutoff_dates | first) }}

),

by_customer as (

    select
        customer_id
        {%- for cutoff in cutoff_dates %}
        {%- set in_churn_window = date_within('order_date', cutoff, 1, churn_days) %}
        {%- set in_value_window = date_within('order_date', cutoff, 1, value_days) %},
        sum(case when {{ in_churn_window }} then n_purchases else 0 end) as orders_churn_window_{{ loop.index }},
        sum(case when {{ in_value_window }} then n_purchases else 0 end) as orders_value_window_{{ loop.index }},
        count(case when {{ in_value_window }} then 1 end) as purchase_days_value_window_{{ loop.index }},
        {{ money_sum("case when " ~ in_value_window ~ " then purchase_amount else 0 end") }} as spend_value_window_{{ loop.index }}
        {%- endfor %}

    from purchase_days
    group by customer_id

),

outcomes as (

    -- the figures of each customer's cutoff (none: no purchase after any cutoff)
    select
        customers.cutoff_date,
        customers.customer_id,
        {%- for figure in ['orders_churn_window', 'orders_value_window', 'purchase_days_value_window', 'spend_value_window'] %}
        {{ at_cutoff('by_customer.' ~ figure, cutoff_dates, 'customers.cutoff_date') }} as {{ figure }}{{ "," if not loop.last }}
        {%- endfor %}

    from customers
    left join by_customer on customers.customer_id = by_customer.customer_id

),

final as (

    select
        cutoff_date as as_of_date,
        customer_id,
        {{ add_days('cutoff_date', var('churn_horizon_days')) }} <= {{ as_of_date() }} as churn_window_complete,
        {{ add_days('cutoff_date', var('value_window_days')) }} <= {{ as_of_date() }} as value_window_complete,
        coalesce(orders_churn_window, 0) = 0 as churned,
        cast(coalesce(orders_churn_window, 0) as {{ dbt.type_bigint() }}) as orders_churn_window,
        cast(coalesce(orders_value_window, 0) as {{ dbt.type_bigint() }}) as orders_value_window,
        coalesce(purchase_days_value_window, 0) as purchase_days_value_window,
        coalesce(spend_value_window, 0) as spend_value_window

    from outcomes

)

select * from final
