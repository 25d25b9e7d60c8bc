{{ config(meta={"dagster": {"ref": {"name": "customer_features"}}}) }}
-- No row that reaches the marts may be dated after the end of the as-of date.
with dated as (
    select 'fct_orders' as model, max(ordered_at) as latest from {{ ref('fct_orders') }}
    union all
    select 'fct_interactions', max(occurred_at) from {{ ref('fct_interactions') }}
    union all
    select 'dim_customers', max(created_at) from {{ ref('dim_customers') }}
    union all
    select 'customer_features', max(cast(last_purchase_date as timestamp)) from {{ ref('customer_features') }}
)
select * from dated
where latest >= {{ as_of_end() }}
