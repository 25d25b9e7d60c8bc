-- One row per known customer: the features as of the run's as-of date (what the scores use).

with history as (

    select * from {{ ref('customer_features_history') }}

),

final as (

    select * from history
    where as_of_date = {{ as_of_date() }}

)

select * from final
