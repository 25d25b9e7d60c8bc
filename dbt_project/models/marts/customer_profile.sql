-- One row per known customer, de-identified: a keyed pseudonym instead of the id, e-mail, phone and
-- name; age band instead of birth date; geography, channel, tenure; RFM and engagement figures.

with features as (

    select * from {{ ref('customer_features') }}

),

pseudonyms as (

    select * from {{ source('ops', 'customer_pseudonyms') }}

),

final as (

    select
        pseudonyms.customer_key,
        features.as_of_date,
        '{{ var("run_id") }}' as run_id,
        features.age_band,
        features.gender,
        features.country,
        features.region,
        features.acquisition_channel,
        features.is_b2b,
        features.marketing_consent,
        features.preferred_channel,
        cast(features.tenure_days as {{ dbt.type_bigint() }}) as tenure_days,
        cast(features.n_orders as {{ dbt.type_bigint() }}) as n_orders,
        cast(features.frequency as {{ dbt.type_bigint() }}) as frequency,
        cast(features.recency_days as {{ dbt.type_bigint() }}) as recency_days,
        features.monetary_total,
        features.monetary_mean,
        features.spend_last_365d,
        cast(features.n_categories as {{ dbt.type_bigint() }}) as n_categories,
        features.top_category,
        cast(features.n_interactions_90d as {{ dbt.type_bigint() }}) as n_interactions_90d,
        cast(features.n_web_visit_90d as {{ dbt.type_bigint() }}) as n_web_visit_90d,
        cast(features.n_email_open_90d as {{ dbt.type_bigint() }}) as n_email_open_90d,
        cast(features.n_complaint_365d as {{ dbt.type_bigint() }}) as n_complaint_365d,
        cast(features.unresolved_complaints as {{ dbt.type_bigint() }}) as unresolved_complaints,
        features.campaign_response_rate,
        features.last_satisfaction_score,
        features.last_nps_score,
        cast(features.days_since_last_interaction as {{ dbt.type_bigint() }}) as days_since_last_interaction

    from features
    inner join pseudonyms on features.customer_id = pseudonyms.customer_id

)

select * from final
