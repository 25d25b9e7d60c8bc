-- Every raw campaign with its typed values and, when it breaks the contract, the rule it breaks.

{%- set contract = ['campaign_id', 'name', 'channel', 'started_at', 'ended_at', 'cost'] %}

with source as (

    select * from {{ source('raw', 'campaigns') }}

),

parsed as (

    select
        _source_file,
        _source_row,
        {{ clean_text('campaign_id') }} as campaign_id,
        {{ clean_text('name') }} as campaign_name,
        lower({{ clean_text('channel') }}) as channel,
        cast({{ parse_timestamp('started_at') }} as date) as started_at,
        {{ unparseable('started_at', parse_timestamp('started_at')) }} as started_unparseable,
        cast({{ parse_timestamp('ended_at') }} as date) as ended_at,
        {{ unparseable('ended_at', parse_timestamp('ended_at')) }} as ended_unparseable,
        {{ parse_number('cost') }} as cost,
        {{ unparseable('cost', parse_number('cost')) }} as cost_unparseable

    from source

),

repeated_keys as (

    select campaign_id
    from parsed
    where campaign_id is not null
    group by campaign_id
    having count(*) > 1

),

conflicting_keys as (

    -- only repeated keys are hashed: comparing whole rows is the expensive part
    select {{ clean_text('source.campaign_id') }} as campaign_id
    from source
    inner join repeated_keys on {{ clean_text('source.campaign_id') }} = repeated_keys.campaign_id
    group by {{ clean_text('source.campaign_id') }}
    having count(distinct {{ row_hash(contract, 'source') }}) > 1

),

checked as (

    select
        parsed.*,
        case
            when parsed.campaign_id is null then 'missing campaign_id'
            when parsed.started_unparseable then 'unparseable started_at (use ISO 8601)'
            when parsed.ended_unparseable then 'unparseable ended_at (use ISO 8601)'
            when parsed.cost_unparseable then 'unparseable cost'
            when parsed.cost < 0 then 'negative cost'
            when conflicting_keys.campaign_id is not null then 'duplicate campaign_id with conflicting content'
        end as reject_reason

    from parsed
    left join conflicting_keys on parsed.campaign_id = conflicting_keys.campaign_id

)

select * from checked
