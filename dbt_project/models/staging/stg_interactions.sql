-- One row per interaction_id: the interactions that keep the contract (see stg_interactions_checked),
-- de-duplicated, up to the end of the as-of date.

with checked as (

    select * from {{ ref('stg_interactions_checked') }}
    where reject_reason is null

),

in_view as (

    select * from checked
    where occurred_at < {{ as_of_end() }}

),

deduplicated as (

    select
        *,
        row_number() over (partition by interaction_id order by _source_row desc) as record_rank

    from in_view

),

final as (

    select
        interaction_id,
        customer_id,
        occurred_at,
        channel,
        interaction_type,
        campaign_id,
        resolved,
        satisfaction_score,
        nps_score,
        sentiment

    from deduplicated
    where record_rank = 1

)

select * from final
