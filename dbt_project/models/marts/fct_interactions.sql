-- Interactions of known customers as of the as-of date.

with interactions as (

    select * from {{ ref('stg_interactions') }}

),

customers as (

    select customer_id from {{ ref('dim_customers') }}

),

final as (

    select interactions.*
    from interactions
    inner join customers on interactions.customer_id = customers.customer_id

)

select * from final
