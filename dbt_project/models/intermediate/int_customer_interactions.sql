-- Per cutoff and customer: interaction counts by type and by channel over trailing windows, ticket
-- status, last survey answers and campaign response, all as of the cutoff.
--
-- Built to scale (macros/cutoffs.sql): the interactions are counted once per customer and period between
-- window edges (int_customer_interaction_periods), and a cutoff's counts are sums over the periods before
-- its end, one aggregation per cutoff. Each cutoff's select reads the period table itself, not a CTE: DuckDB
-- copies a CTE that is read more than once into memory, which at a million customers costs more than the
-- sums. Campaigns are reduced to each customer's first touch and first response per campaign, then
-- counted for all cutoffs in one pass (one column per cutoff); survey answers, a small share of the
-- interactions, are ranked per cutoff.

{%- set windows = var('feature_windows_days') | map('int') | list %}
{%- set cutoff_dates = feature_cutoff_dates() %}
{%- set bigint = dbt.type_bigint() %}

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}

),

survey_answers as (

    select customer_id, interaction_id, occurred_at, satisfaction_score, nps_score
    from {{ ref('stg_interactions') }}
    where satisfaction_score is not null or nps_score is not null

),

campaign_interactions as (

    select customer_id, campaign_id, interaction_type, occurred_at
    from {{ ref('stg_interactions') }}
    where campaign_id is not null

),

per_cutoff as (

    {%- for cutoff in cutoff_dates %}

    -- as of {{ cutoff }}: the periods that end by the day after it; a window of d days holds the periods
    -- that end after the window starts (d days before that end)
    select
        {{ date_literal(cutoff) }} as cutoff_date,
        customer_id,
        {%- for d in windows %}
        {%- set in_window = 'period_end > ' ~ date_literal(cutoff, 1 - d) %}
        {%- for itype in var('interaction_types') %}
        cast(sum(case when {{ in_window }} then n_{{ itype }} else 0 end) as {{ bigint }}) as n_{{ itype }}_{{ d }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        cast(sum(case when {{ in_window }} then n_channel_{{ channel }} else 0 end) as {{ bigint }}) as n_channel_{{ channel }}_{{ d }}d,
        {%- endfor %}
        cast(sum(case when {{ in_window }} then n_interactions else 0 end) as {{ bigint }}) as n_interactions_{{ d }}d,
        {%- endfor %}
        cast(sum(open_tickets) as {{ bigint }}) as open_tickets,
        cast(sum(unresolved_tickets) as {{ bigint }}) as unresolved_tickets,
        cast(sum(complaints_total) as {{ bigint }}) as complaints_total,
        cast(sum(unresolved_complaints) as {{ bigint }}) as unresolved_complaints,
        max(last_interaction_at) as last_interaction_at

    from {{ ref('int_customer_interaction_periods') }}
    where period_end <= {{ date_literal(cutoff, 1) }}
    group by customer_id
    {%- if not loop.last %}

    union all
    {%- endif %}
    {%- endfor %}

),

surveys as (

    select
        cutoffs.cutoff_date,
        survey_answers.customer_id,
        survey_answers.satisfaction_score,
        survey_answers.nps_score,
        row_number() over (
            partition by cutoffs.cutoff_date, survey_answers.customer_id
            order by survey_answers.occurred_at desc, survey_answers.interaction_id desc
        ) as satisfaction_rank_desc

    from survey_answers
    inner join cutoffs on survey_answers.occurred_at < cutoffs.cutoff_end

),

last_survey as (

    select cutoff_date, customer_id, satisfaction_score as last_satisfaction_score, nps_score as last_nps_score
    from surveys
    where satisfaction_rank_desc = 1

),

campaign_firsts as (

    select
        customer_id,
        campaign_id,
        min(occurred_at) as first_touch_at,
        min(case when interaction_type = 'campaign_response' then occurred_at end) as first_response_at

    from campaign_interactions
    group by customer_id, campaign_id

),

campaigns_by_customer as (

    select
        customer_id
        {%- for cutoff in cutoff_dates %},
        count(case when first_touch_at < {{ date_literal(cutoff, 1) }} then 1 end) as campaigns_touched_{{ loop.index }},
        count(case when first_response_at < {{ date_literal(cutoff, 1) }} then 1 end) as campaigns_responded_{{ loop.index }}
        {%- endfor %}

    from campaign_firsts
    group by customer_id

),

with_campaigns as (

    -- the campaigns the customer had touched by the cutoff (null: none) and responded to
    select
        per_cutoff.*,
        nullif({{ at_cutoff('campaigns_by_customer.campaigns_touched', cutoff_dates, 'per_cutoff.cutoff_date') }}, 0)
            as campaigns_touched,
        {{ at_cutoff('campaigns_by_customer.campaigns_responded', cutoff_dates, 'per_cutoff.cutoff_date') }}
            as campaigns_responded

    from per_cutoff
    left join campaigns_by_customer on per_cutoff.customer_id = campaigns_by_customer.customer_id

),

final as (

    select
        with_campaigns.cutoff_date,
        with_campaigns.customer_id,
        {%- for d in windows %}
        {%- for itype in var('interaction_types') %}
        with_campaigns.n_{{ itype }}_{{ d }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        with_campaigns.n_channel_{{ channel }}_{{ d }}d,
        {%- endfor %}
        with_campaigns.n_interactions_{{ d }}d,
        {%- endfor %}
        with_campaigns.open_tickets,
        with_campaigns.unresolved_tickets,
        with_campaigns.complaints_total,
        with_campaigns.unresolved_complaints,
        with_campaigns.last_interaction_at,
        last_survey.last_satisfaction_score,
        last_survey.last_nps_score,
        with_campaigns.campaigns_touched,
        case when with_campaigns.campaigns_touched > 0 then with_campaigns.campaigns_responded end
            as campaigns_responded,
        case when with_campaigns.campaigns_touched > 0
             then {{ ratio('with_campaigns.campaigns_responded', 'with_campaigns.campaigns_touched') }} end
            as campaign_response_rate

    from with_campaigns
    left join last_survey
        on with_campaigns.cutoff_date = last_survey.cutoff_date
        and with_campaigns.customer_id = last_survey.customer_id

)

select * from final
