-- One row per order_id, typed and cleaned; orders placed after the as-of date are out of view.
-- A missing status means completed; only completed orders count as purchases downstream.

with source as (

    select * from {{ source('raw', 'orders') }}

),

renamed as (

    select
        {{ clean_text('order_id') }} as order_id,
        {{ clean_text('customer_id') }} as customer_id,
        {{ parse_timestamp('ordered_at') }} as ordered_at,
        {{ parse_number('amount') }} as amount,
        coalesce(lower({{ clean_text('status') }}), 'completed') as status,
        coalesce(upper({{ clean_text('currency') }}), '{{ var("reporting_currency") }}') as currency,
        lower({{ clean_text('product_category') }}) as product_category,
        {{ parse_int('quantity') }} as quantity,
        lower({{ clean_text('sales_channel') }}) as sales_channel,
        _source_row

    from source

),

in_view as (

    select * from renamed
    where order_id is not null
      and customer_id is not null
      and amount is not null
      and ordered_at < {{ as_of_end() }}

),

deduplicated as (

    select
        *,
        row_number() over (partition by order_id order by _source_row desc) as record_rank

    from in_view

),

final as (

    select
        order_id,
        customer_id,
        ordered_at,
        cast(ordered_at as date) as order_date,
        amount,
        status,
        currency,
        product_category,
        quantity,
        sales_channel

    from deduplicated
    where record_rank = 1

)

select * from final
