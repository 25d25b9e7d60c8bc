-- One row per known customer, de-identified for a wide audience, and not joinable to any identity in the
-- serving file:
-- * its key, profile_key, is a keyed pseudonym of its own (HMAC of 'profile:' || customer_id, computed by
--   the ops/customer_pseudonyms asset): it cannot be derived from customer_id or customer_key, which
--   customer_scores carries, without the pipeline's secret key;
-- * no e-mail, phone, name, birth date or exact tenure; age and tenure come in bands;
-- * k-anonymous on its quasi-identifiers (gender, country, region, age band, tenure band; macro
--   customer_profile_quasi_identifiers): every combination of them covers at least k = 5 customers
--   (customer_profile_k). Where a combination is rarer, the rows in it are generalised step by step
--   (region -> 'other', tenure and age in wider bands, country -> 'other', then tenure, age, gender ->
--   'any'); rows still in a group under k get 'suppressed' in all five (macros/k_anonymity.sql).
-- The behavioural figures (orders, spend, recency, engagement) are exact: they are not among the
-- quasi-identifiers (nobody outside the company knows them), but whoever knows a customer's purchases can
-- find the row.
{%- set k = customer_profile_k() %}

with features as (

    select * from {{ ref('customer_features') }}

),

pseudonyms as (

    select * from {{ source('ops', 'customer_pseudonyms') }}

),

quasi_identifiers as (

    select
        pseudonyms.profile_key,
        coalesce(features.gender, 'unknown') as gender,
        coalesce(features.country, 'unknown') as country,
        coalesce(features.region, 'unknown') as region,
        coalesce(features.age_band, 'unknown') as age_band,
        case
            when features.tenure_days is null then 'unknown'
            when features.tenure_days < 91 then '0-3m'
            when features.tenure_days < 182 then '3-6m'
            when features.tenure_days < 365 then '6-12m'
            when features.tenure_days < 730 then '1-2y'
            when features.tenure_days < 1095 then '2-3y'
            when features.tenure_days < 1826 then '3-5y'
            else '5y+'
        end as tenure_band

    from features
    inner join pseudonyms on features.customer_id = pseudonyms.customer_id

),

{{ k_anonymous_ctes('quasi_identifiers', 'profile_key', customer_profile_quasi_identifiers(), k=k, steps=[
    {'region': "'other'"},
    {'tenure_band': "case when tenure_band in ('0-3m', '3-6m', '6-12m') then '0-1y'
                          when tenure_band in ('1-2y', '2-3y') then '1-3y'
                          when tenure_band in ('3-5y', '5y+') then '3y+'
                          else tenure_band end"},
    {'age_band': "case when age_band in ('18-24', '25-34') then '18-34'
                       when age_band in ('35-44', '45-54') then '35-54'
                       when age_band in ('55-64', '65+') then '55+'
                       else age_band end"},
    {'country': "'other'", 'region': "'other'"},
    {'tenure_band': "'any'"},
    {'age_band': "'any'"},
    {'gender': "'any'"},
], prefix='anonymised') }},

final as (

    select
        anonymised_final.profile_key,
        features.as_of_date,
        '{{ var("run_id") }}' as run_id,
        anonymised_final.age_band,
        anonymised_final.gender,
        anonymised_final.country,
        anonymised_final.region,
        anonymised_final.tenure_band,
        features.acquisition_channel,
        features.is_b2b,
        features.marketing_consent,
        features.preferred_channel,
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
    inner join anonymised_final on pseudonyms.profile_key = anonymised_final.profile_key

)

select * from final
