-- Per back-dated cutoff and customer: what happened after the cutoff, for training labels and
-- back-tests (the value window is the value models' back-test window, the CLV horizon unless the
-- history is shorter: see ml/windows.py). A window counts only when it ends by the as-of date (`*_window_complete`); the run
-- never looks past the as-of date.

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}
    where not is_as_of

),

customers as (

    select as_of_date as cutoff_date, customer_id
    from {{ ref('customer_features_history') }}
    where as_of_date < {{ as_of_date() }}

),

purchases as (

    select * from {{ ref('stg_orders') }}
    where status = 'completed'

),

after_cutoff as (

    select
        cutoffs.cutoff_date,
        purchases.customer_id,
        purchases.order_date,
        purchases.amount,
        purchases.ordered_at < {{ dbt.dateadd('day', var('churn_horizon_days'), 'cutoffs.cutoff_end') }} as in_churn_window,
        purchases.ordered_at < {{ dbt.dateadd('day', var('value_window_days'), 'cutoffs.cutoff_end') }} as in_value_window

    from purchases
    inner join cutoffs
        on purchases.ordered_at >= cutoffs.cutoff_end

),

per_customer as (

    select
        cutoff_date,
        customer_id,
        sum(case when in_churn_window then 1 else 0 end) as orders_churn_window,
        sum(case when in_value_window then 1 else 0 end) as orders_value_window,
        count(distinct case when in_value_window then order_date end) as purchase_days_value_window,
        {{ money_sum('case when in_value_window then amount else 0 end') }} as spend_value_window

    from after_cutoff
    group by cutoff_date, customer_id

),

final as (

    select
        customers.cutoff_date as as_of_date,
        customers.customer_id,
        {{ dbt.dateadd('day', var('churn_horizon_days'), 'customers.cutoff_date') }} <= {{ as_of_date() }}
            as churn_window_complete,
        {{ dbt.dateadd('day', var('value_window_days'), 'customers.cutoff_date') }} <= {{ as_of_date() }}
            as value_window_complete,
        coalesce(per_customer.orders_churn_window, 0) = 0 as churned,
        cast(coalesce(per_customer.orders_churn_window, 0) as {{ dbt.type_bigint() }}) as orders_churn_window,
        cast(coalesce(per_customer.orders_value_window, 0) as {{ dbt.type_bigint() }}) as orders_value_window,
        coalesce(per_customer.purchase_days_value_window, 0) as purchase_days_value_window,
        coalesce(per_customer.spend_value_window, 0) as spend_value_window

    from customers
    left join per_customer
        on customers.cutoff_date = per_customer.cutoff_date
        and customers.customer_id = per_customer.customer_id

)

select * from final
