-- One row per cutoff date and customer known by then: the one definition of every feature, used for
-- scoring (the as-of date, in customer_features) and for training and back-tests (earlier cutoffs).
-- Counts are 0 when there is nothing to count; values that need history are null without it.

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}

),

customers as (

    select
        cutoffs.cutoff_date,
        dim_customers.*

    from {{ ref('dim_customers') }} as dim_customers
    inner join cutoffs on dim_customers.created_at < cutoffs.cutoff_end

),

orders as (

    select * from {{ ref('int_customer_orders') }}

),

interactions as (

    select * from {{ ref('int_customer_interactions') }}

),

category_mix as (

    -- the top category and the number of categories bought, from the customer's top category row
    select
        cutoff_date,
        customer_id,
        product_category as top_category,
        order_share as top_category_share,
        n_categories

    from {{ ref('int_customer_categories') }}
    where category_rank = 1

),

features as (

    select
        customers.customer_id,
        customers.cutoff_date as as_of_date,
        customers.created_at,
        {{ days_before('customers.created_at', 'customers.cutoff_date') }} as tenure_days,
        customers.country,
        customers.region,
        customers.acquisition_channel,
        {{ age_band('customers.birth_date', 'customers.cutoff_date') }} as age_band,
        customers.gender,
        customers.is_b2b,
        customers.marketing_consent,
        customers.preferred_channel,

        coalesce(orders.n_orders, 0) > 0 as has_purchased,
        cast(coalesce(orders.n_orders, 0) as {{ dbt.type_bigint() }}) as n_orders,
        greatest(coalesce(orders.n_purchase_days, 0) - 1, 0) as frequency,
        orders.first_purchase_date,
        orders.last_purchase_date,
        {{ days_before('orders.last_purchase_date', 'customers.cutoff_date') }} as recency_days,
        {{ days_between('orders.first_purchase_date', 'orders.last_purchase_date') }} as btyd_recency_days,
        {{ days_before('orders.first_purchase_date', 'customers.cutoff_date') }} as btyd_t_days,
        coalesce(orders.monetary_total, 0) as monetary_total,
        orders.monetary_mean,
        orders.repeat_spend_mean,
        {{ ratio('coalesce(orders.n_orders, 0) * 365.25',
                 'greatest(' ~ days_before('customers.created_at', 'customers.cutoff_date') ~ ', 1)') }}
            as purchase_rate_per_year,
        cast(coalesce(orders.n_cancelled, 0) as {{ dbt.type_bigint() }}) as n_cancelled,
        cast(coalesce(orders.n_refunded, 0) as {{ dbt.type_bigint() }}) as n_refunded,
        cast(coalesce(orders.orders_last_90d, 0) as {{ dbt.type_bigint() }}) as orders_last_90d,
        cast(coalesce(orders.orders_prev_90d, 0) as {{ dbt.type_bigint() }}) as orders_prev_90d,
        coalesce(orders.spend_last_90d, 0) as spend_last_90d,
        coalesce(orders.spend_prev_90d, 0) as spend_prev_90d,
        case
            when coalesce(orders.orders_last_90d, 0) + coalesce(orders.orders_prev_90d, 0) = 0 then 0.0
            else {{ ratio('orders.orders_last_90d - orders.orders_prev_90d',
                          'orders.orders_last_90d + orders.orders_prev_90d') }}
        end as order_trend,
        cast(coalesce(orders.orders_last_365d, 0) as {{ dbt.type_bigint() }}) as orders_last_365d,
        coalesce(orders.spend_last_365d, 0) as spend_last_365d,
        coalesce(category_mix.n_categories, 0) as n_categories,
        category_mix.top_category,
        category_mix.top_category_share,

        {%- for days in var('feature_windows_days') %}
        {%- for itype in var('interaction_types') %}
        cast(coalesce(interactions.n_{{ itype }}_{{ days }}d, 0) as {{ dbt.type_bigint() }}) as n_{{ itype }}_{{ days }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        cast(coalesce(interactions.n_channel_{{ channel }}_{{ days }}d, 0) as {{ dbt.type_bigint() }}) as n_channel_{{ channel }}_{{ days }}d,
        {%- endfor %}
        cast(coalesce(interactions.n_interactions_{{ days }}d, 0) as {{ dbt.type_bigint() }}) as n_interactions_{{ days }}d,
        {%- endfor %}
        cast(coalesce(interactions.open_tickets, 0) as {{ dbt.type_bigint() }}) as open_tickets,
        cast(coalesce(interactions.unresolved_tickets, 0) as {{ dbt.type_bigint() }}) as unresolved_tickets,
        cast(coalesce(interactions.complaints_total, 0) as {{ dbt.type_bigint() }}) as complaints_total,
        cast(coalesce(interactions.unresolved_complaints, 0) as {{ dbt.type_bigint() }}) as unresolved_complaints,
        interactions.last_satisfaction_score,
        interactions.last_nps_score,
        interactions.campaign_response_rate,
        {{ days_before('interactions.last_interaction_at', 'customers.cutoff_date') }} as days_since_last_interaction

    from customers
    left join orders
        on customers.cutoff_date = orders.cutoff_date and customers.customer_id = orders.customer_id
    left join interactions
        on customers.cutoff_date = interactions.cutoff_date and customers.customer_id = interactions.customer_id
    left join category_mix
        on customers.cutoff_date = category_mix.cutoff_date and customers.customer_id = category_mix.customer_id

),

final as (

    select
        *,
        {{ lifecycle_stage('n_orders', 'recency_days', 'btyd_t_days', 'frequency', 'btyd_recency_days', 'orders_last_365d') }}
            as lifecycle_stage

    from features

)

select * from final
