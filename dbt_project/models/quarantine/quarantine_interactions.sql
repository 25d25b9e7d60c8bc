-- Raw interactions rows that break the data contract: kept, never dropped, with the rule they break.

with checked as (

    select * from {{ ref('stg_interactions_checked') }}
    where reject_reason is not null

),

final as (

    select
        '{{ var("run_id") }}' as run_id,
        'interactions' as entity,
        _source_file as source_file,
        _source_row as source_row,
        reject_reason as rule,
        raw_row

    from checked

)

select * from final
