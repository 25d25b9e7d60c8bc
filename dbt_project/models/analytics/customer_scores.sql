-- Published. One row per known customer: who to focus on, why and what to do (see ml/scoring.py).
-- Typed here so that the published contract holds whatever the Python side produces.

with scores as (

    select * from {{ source('scores', 'customer_scores') }}

),

final as (

    select
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(as_of_date as date) as as_of_date,
        cast(run_id as {{ dbt.type_string() }}) as run_id,
        cast(churn_probability as double) as churn_probability,
        cast(p_alive as double) as p_alive,
        cast(expected_purchases as double) as expected_purchases,
        cast(expected_spend as double) as expected_spend,
        cast(clv as double) as clv,
        cast(clv_model as {{ dbt.type_string() }}) as clv_model,
        cast(potential_score as double) as potential_score,
        cast(potential_rank as {{ dbt.type_bigint() }}) as potential_rank,
        cast(priority_tier as {{ dbt.type_string() }}) as priority_tier,
        cast(rfm_segment as {{ dbt.type_string() }}) as rfm_segment,
        cast(lifecycle_stage as {{ dbt.type_string() }}) as lifecycle_stage,
        cast(value_segment as {{ dbt.type_string() }}) as value_segment,
        cast(next_best_action as {{ dbt.type_string() }}) as next_best_action,
        cast(next_category as {{ dbt.type_string() }}) as next_category,
        cast(top_reasons as {{ dbt.type_string() }}) as top_reasons,
        cast(model_versions as {{ dbt.type_string() }}) as model_versions,
        cast(nullif(churn_flag, '') as {{ dbt.type_string() }}) as churn_flag,
        cast(potential_drivers as {{ dbt.type_string() }}) as potential_drivers,
        cast(r_score as {{ dbt.type_bigint() }}) as r_score,
        cast(f_score as {{ dbt.type_bigint() }}) as f_score,
        cast(m_score as {{ dbt.type_bigint() }}) as m_score,
        cast(customer_key as {{ dbt.type_string() }}) as customer_key,
        cast(score_value as double) as score_value,
        cast(score_retention as double) as score_retention,
        cast(score_headroom as double) as score_headroom,
        cast(score_reach as double) as score_reach,
        cast(behaviour_cluster as {{ dbt.type_bigint() }}) as behaviour_cluster,
        cast(behaviour_cluster_label as {{ dbt.type_string() }}) as behaviour_cluster_label,
        cast(next_category_probability as double) as next_category_probability,
        cast(action_channel as {{ dbt.type_string() }}) as action_channel,
        cast(action_reason as {{ dbt.type_string() }}) as action_reason,
        cast(previous_rfm_segment as {{ dbt.type_string() }}) as previous_rfm_segment,
        cast(previous_lifecycle_stage as {{ dbt.type_string() }}) as previous_lifecycle_stage,
        cast(previous_priority_tier as {{ dbt.type_string() }}) as previous_priority_tier,
        cast(previous_potential_rank as {{ dbt.type_bigint() }}) as previous_potential_rank,
        cast(expected_purchases_low as double) as expected_purchases_low,
        cast(expected_purchases_high as double) as expected_purchases_high,
        cast(clv_low as double) as clv_low,
        cast(clv_high as double) as clv_high,
        cast(value_reasons as {{ dbt.type_string() }}) as value_reasons

    from scores

)

select * from final
