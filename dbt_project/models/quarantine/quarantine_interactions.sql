-- Raw interactions rows that break the data contract: kept, never dropped, with the rule they break.

{%- set contract = ['interaction_id', 'customer_id', 'occurred_at', 'channel', 'interaction_type', 'campaign_id',
                    'resolved', 'satisfaction_score', 'nps_score', 'sentiment'] %}

with checked as (

    select _source_row, reject_reason from {{ ref('stg_interactions_checked') }}
    where reject_reason is not null

),

source as (

    select * from {{ source('raw', 'interactions') }}

),

final as (

    select
        '{{ var("run_id") }}' as run_id,
        'interactions' as entity,
        source._source_file as source_file,
        source._source_row as source_row,
        checked.reject_reason as rule,
        {{ raw_row(contract, 'source') }} as raw_row

    from checked
    inner join source on checked._source_row = source._source_row

)

select * from final
