-- Every raw interaction with its typed values and, when it breaks the contract, the rule it breaks.

{%- set contract = ['interaction_id', 'customer_id', 'occurred_at', 'channel', 'interaction_type', 'campaign_id',
                    'resolved', 'satisfaction_score', 'nps_score', 'sentiment'] %}

with source as (

    select * from {{ source('raw', 'interactions') }}

),

known_customers as (

    select distinct {{ clean_text('customer_id') }} as customer_id
    from {{ source('raw', 'customers') }}

),

parsed as (

    select
        _source_file,
        _source_row,
        {{ clean_text('interaction_id') }} as interaction_id,
        {{ clean_text('customer_id') }} as customer_id,
        {{ clean_text('occurred_at') }} as occurred_at_text,
        {{ parse_timestamp('occurred_at') }} as occurred_at,
        lower({{ clean_text('channel') }}) as channel,
        lower({{ clean_text('interaction_type') }}) as interaction_type,
        {{ clean_text('campaign_id') }} as campaign_id,
        {{ parse_bool('resolved') }} as resolved,
        {{ unparseable('resolved', parse_bool('resolved')) }} as resolved_unparseable,
        {{ parse_int('satisfaction_score') }} as satisfaction_score,
        {{ unparseable('satisfaction_score', parse_int('satisfaction_score')) }} as satisfaction_unparseable,
        {{ parse_int('nps_score') }} as nps_score,
        {{ unparseable('nps_score', parse_int('nps_score')) }} as nps_unparseable,
        {{ parse_number('sentiment') }} as sentiment,
        {{ unparseable('sentiment', parse_number('sentiment')) }} as sentiment_unparseable

    from source

),

repeated_keys as (

    select interaction_id
    from parsed
    where interaction_id is not null
    group by interaction_id
    having count(*) > 1

),

conflicting_keys as (

    -- only repeated keys are hashed: comparing whole rows is the expensive part
    select {{ clean_text('source.interaction_id') }} as interaction_id
    from source
    inner join repeated_keys on {{ clean_text('source.interaction_id') }} = repeated_keys.interaction_id
    group by {{ clean_text('source.interaction_id') }}
    having count(distinct {{ row_hash(contract, 'source') }}) > 1

),

checked as (

    select
        parsed.*,
        case
            when parsed.interaction_id is null then 'missing interaction_id'
            when parsed.customer_id is null then 'missing customer_id'
            when parsed.occurred_at_text is null then 'missing occurred_at'
            when parsed.occurred_at is null then 'unparseable occurred_at (use ISO 8601, e.g. 2024-01-31 14:05:00)'
            when parsed.occurred_at > {{ run_started() }} then 'occurred_at in the future'
            when parsed.channel is null then 'missing channel'
            when parsed.interaction_type is null then 'missing interaction_type'
            when parsed.resolved_unparseable then 'unparseable resolved (true or false)'
            when parsed.satisfaction_unparseable or parsed.satisfaction_score not between 1 and 5
                then 'satisfaction_score not an integer 1..5'
            when parsed.nps_unparseable or parsed.nps_score not between 0 and 10 then 'nps_score not an integer 0..10'
            when parsed.sentiment_unparseable or parsed.sentiment not between -1 and 1 then 'sentiment not a number -1..1'
            when known_customers.customer_id is null then 'unknown customer_id (not in customers)'
            when conflicting_keys.interaction_id is not null then 'duplicate interaction_id with conflicting content'
        end as reject_reason

    from parsed
    left join known_customers on parsed.customer_id = known_customers.customer_id
    left join conflicting_keys on parsed.interaction_id = conflicting_keys.interaction_id

)

select * from checked
