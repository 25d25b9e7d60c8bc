-- Published. Per campaign, overall (segment = 'All customers') and per current RFM segment: reach
-- (customers with any interaction tagged with the campaign), responders (a campaign_response), response
-- rate, and revenue from completed orders within var('response_window_days') days after a
-- customer's first response. Cost and revenue per responder when the campaign's cost is known.

with interactions as (

    select customer_id, campaign_id, interaction_type, occurred_at
    from {{ ref('fct_interactions') }}
    where campaign_id is not null

),

campaigns as (

    select * from {{ ref('stg_campaigns') }}

),

orders as (

    select customer_id, ordered_at, amount from {{ ref('fct_orders') }}
    where is_purchase

),

segments as (

    select customer_id, rfm_segment from {{ ref('customer_scores') }}

),

reached as (

    select
        campaign_id,
        customer_id,
        min(case when interaction_type = 'campaign_response' then occurred_at end) as first_response_at

    from interactions
    group by campaign_id, customer_id

),

revenue as (

    select
        reached.campaign_id,
        reached.customer_id,
        sum(orders.amount) as revenue_after_response

    from reached
    inner join orders
        on orders.customer_id = reached.customer_id
        and orders.ordered_at >= reached.first_response_at
        and orders.ordered_at < {{ add_days('reached.first_response_at', var('response_window_days')) }}
    group by reached.campaign_id, reached.customer_id

),

per_customer as (

    select
        reached.campaign_id,
        reached.customer_id,
        coalesce(segments.rfm_segment, 'unknown') as rfm_segment,
        reached.first_response_at is not null as responded,
        coalesce(revenue.revenue_after_response, 0) as revenue_after_response

    from reached
    left join revenue
        on reached.campaign_id = revenue.campaign_id and reached.customer_id = revenue.customer_id
    left join segments on reached.customer_id = segments.customer_id

),

by_segment as (

    select campaign_id, 'All customers' as segment, count(*) as reach,
        sum(case when responded then 1 else 0 end) as responders, sum(revenue_after_response) as revenue
    from per_customer
    group by campaign_id

    union all

    select campaign_id, rfm_segment as segment, count(*) as reach,
        sum(case when responded then 1 else 0 end) as responders, sum(revenue_after_response) as revenue
    from per_customer
    group by campaign_id, rfm_segment

),

final as (

    select
        by_segment.campaign_id,
        campaigns.campaign_name,
        campaigns.channel,
        by_segment.segment,
        by_segment.segment = 'All customers' as is_campaign_total,
        cast(by_segment.reach as {{ dbt.type_bigint() }}) as reach,
        cast(by_segment.responders as {{ dbt.type_bigint() }}) as responders,
        {{ ratio('by_segment.responders', 'by_segment.reach') }} as response_rate,
        cast(by_segment.revenue as double) as revenue_after_response,
        case when by_segment.responders > 0 then by_segment.revenue / by_segment.responders end
            as revenue_per_responder,
        cast(case when by_segment.segment = 'All customers' then campaigns.cost end as double) as campaign_cost,
        cast({{ var('response_window_days') }} as {{ dbt.type_bigint() }}) as response_window_days,
        {{ as_of_date() }} as as_of_date,
        '{{ var("run_id") }}' as run_id

    from by_segment
    left join campaigns on by_segment.campaign_id = campaigns.campaign_id

)

select * from final
