-- Orders of known customers as of the as-of date; is_purchase marks completed orders.

with orders as (

    select * from {{ ref('stg_orders') }}

),

customers as (

    select customer_id from {{ ref('dim_customers') }}

),

final as (

    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.order_date,
        orders.amount,
        orders.status,
        orders.status = 'completed' as is_purchase,
        orders.currency,
        orders.product_category,
        orders.quantity,
        orders.sales_channel

    from orders
    inner join customers on orders.customer_id = customers.customer_id

)

select * from final
