-- Every raw order with its typed values and, when it breaks the contract, the rule it breaks
-- (reject_reason). stg_orders keeps the rest; quarantine_orders keeps these, with the raw row.

{%- set contract = ['order_id', 'customer_id', 'ordered_at', 'amount', 'status', 'currency', 'product_category', 'quantity', 'sales_channel'] %}

with source as (

    select * from {{ source('raw', 'orders') }}

),

known_customers as (

    select distinct {{ clean_text('customer_id') }} as customer_id
    from {{ source('raw', 'customers') }}

),

parsed as (

    select
        _source_file,
        _source_row,
        {{ clean_text('order_id') }} as order_id,
        {{ clean_text('customer_id') }} as customer_id,
        {{ clean_text('ordered_at') }} as ordered_at_text,
        {{ parse_timestamp('ordered_at') }} as ordered_at,
        {{ clean_text('amount') }} as amount_text,
        {{ parse_number('amount') }} as amount,
        coalesce(lower({{ clean_text('status') }}), 'completed') as status,
        coalesce(upper({{ clean_text('currency') }}), '{{ var("reporting_currency") }}') as currency,
        lower({{ clean_text('product_category') }}) as product_category,
        {{ parse_int('quantity') }} as quantity,
        {{ unparseable('quantity', parse_int('quantity')) }} as quantity_unparseable,
        lower({{ clean_text('sales_channel') }}) as sales_channel

    from source

),

repeated_keys as (

    select order_id
    from parsed
    where order_id is not null
    group by order_id
    having count(*) > 1

),

conflicting_keys as (

    -- only repeated keys are hashed: comparing whole rows is the expensive part
    select {{ clean_text('source.order_id') }} as order_id
    from source
    inner join repeated_keys on {{ clean_text('source.order_id') }} = repeated_keys.order_id
    group by {{ clean_text('source.order_id') }}
    having count(distinct {{ row_hash(contract, 'source') }}) > 1

),

checked as (

    select
        parsed.*,
        case
            when parsed.order_id is null then 'missing order_id'
            when parsed.customer_id is null then 'missing customer_id'
            when parsed.ordered_at_text is null then 'missing ordered_at'
            when parsed.ordered_at is null then 'unparseable ordered_at (use ISO 8601, e.g. 2024-01-31 or 2024-01-31 14:05:00)'
            when parsed.ordered_at > {{ run_started() }} then 'ordered_at in the future'
            when parsed.amount_text is null then 'missing amount'
            when parsed.amount is null then 'unparseable amount (a number with a dot as decimal separator)'
            when parsed.amount < 0 then 'negative amount'
            when parsed.status not in ('completed', 'cancelled', 'refunded') then 'unknown status (completed, cancelled or refunded)'
            when parsed.quantity_unparseable then 'unparseable quantity'
            when known_customers.customer_id is null then 'unknown customer_id (not in customers)'
            when conflicting_keys.order_id is not null then 'duplicate order_id with conflicting content'
        end as reject_reason

    from parsed
    left join known_customers on parsed.customer_id = known_customers.customer_id
    left join conflicting_keys on parsed.order_id = conflicting_keys.order_id

)

select * from checked
