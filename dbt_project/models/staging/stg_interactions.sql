-- One row per interaction_id, typed and cleaned; interactions after the as-of date are out of view.

with source as (

    select * from {{ source('raw', 'interactions') }}

),

renamed as (

    select
        {{ clean_text('interaction_id') }} as interaction_id,
        {{ clean_text('customer_id') }} as customer_id,
        {{ parse_timestamp('occurred_at') }} as occurred_at,
        lower({{ clean_text('channel') }}) as channel,
        lower({{ clean_text('interaction_type') }}) as interaction_type,
        {{ clean_text('campaign_id') }} as campaign_id,
        {{ parse_bool('resolved') }} as resolved,
        {{ parse_int('satisfaction_score') }} as satisfaction_score,
        {{ parse_int('nps_score') }} as nps_score,
        {{ parse_number('sentiment') }} as sentiment,
        _source_row

    from source

),

in_view as (

    select * from renamed
    where interaction_id is not null
      and customer_id is not null
      and occurred_at < {{ as_of_end() }}

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
        case when satisfaction_score between 1 and 5 then satisfaction_score end as satisfaction_score,
        case when nps_score between 0 and 10 then nps_score end as nps_score,
        case when sentiment between -1 and 1 then sentiment end as sentiment

    from deduplicated
    where record_rank = 1

)

select * from final
