-- One row per campaign_id; campaigns that start after the as-of date are out of view.

with source as (

    select * from {{ source('raw', 'campaigns') }}

),

renamed as (

    select
        {{ clean_text('campaign_id') }} as campaign_id,
        {{ clean_text('name') }} as campaign_name,
        lower({{ clean_text('channel') }}) as channel,
        cast({{ parse_timestamp('started_at') }} as date) as started_at,
        cast({{ parse_timestamp('ended_at') }} as date) as ended_at,
        {{ parse_number('cost') }} as cost,
        _source_row

    from source

),

in_view as (

    select * from renamed
    where campaign_id is not null
      and (started_at is null or started_at < {{ as_of_end() }})

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
