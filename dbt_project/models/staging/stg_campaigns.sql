-- One row per campaign_id: the campaigns that keep the contract, started by the as-of date.

with checked as (

    select * from {{ ref('stg_campaigns_checked') }}
    where reject_reason is null

),

in_view as (

    select * from checked
    where started_at is null or started_at < {{ as_of_end() }}

),

deduplicated as (

    select
        *,
        row_number() over (partition by campaign_id order by _source_row desc) as record_rank

    from in_view

),

final as (

    select campaign_id, campaign_name, channel, started_at, ended_at, cost
    from deduplicated
    where record_rank = 1

)

select * from final
