-- Per cutoff and customer: interaction counts by type and by channel over trailing windows, ticket
-- status, last survey answers and campaign response, all as of the cutoff.

with cutoffs as (

    select * from {{ ref('int_cutoffs') }}

),

interactions as (

    select
        cutoffs.cutoff_date,
        stg_interactions.*

    from {{ ref('stg_interactions') }} as stg_interactions
    inner join cutoffs on stg_interactions.occurred_at < cutoffs.cutoff_end

),

counts as (

    select
        cutoff_date,
        customer_id,
        {%- for days in var('feature_windows_days') %}
        {%- for itype in var('interaction_types') %}
        sum(case when interaction_type = '{{ itype }}' and occurred_at >= {{ window_start(days) }} then 1 else 0 end)
            as n_{{ itype }}_{{ days }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        sum(case when channel = '{{ channel }}' and occurred_at >= {{ window_start(days) }} then 1 else 0 end)
            as n_channel_{{ channel }}_{{ days }}d,
        {%- endfor %}
        sum(case when occurred_at >= {{ window_start(days) }} then 1 else 0 end) as n_interactions_{{ days }}d,
        {%- endfor %}
        sum(case when interaction_type in ('support_ticket', 'complaint') and resolved is null then 1 else 0 end)
            as open_tickets,
        sum(case when interaction_type in ('support_ticket', 'complaint') and resolved = false then 1 else 0 end)
            as unresolved_tickets,
        sum(case when interaction_type = 'complaint' then 1 else 0 end) as complaints_total,
        sum(case when interaction_type = 'complaint' and resolved = false then 1 else 0 end) as unresolved_complaints,
        max(occurred_at) as last_interaction_at

    from interactions
    group by cutoff_date, customer_id

),

surveys as (

    select
        cutoff_date,
        customer_id,
        satisfaction_score,
        nps_score,
        row_number() over (partition by cutoff_date, customer_id order by occurred_at desc, interaction_id desc) as satisfaction_rank_desc

    from interactions
    where satisfaction_score is not null or nps_score is not null

),

last_survey as (

    select cutoff_date, customer_id, satisfaction_score as last_satisfaction_score, nps_score as last_nps_score
    from surveys
    where satisfaction_rank_desc = 1

),

campaign_touches as (

    select
        cutoff_date,
        customer_id,
        count(distinct campaign_id) as campaigns_touched,
        count(distinct case when interaction_type = 'campaign_response' then campaign_id end) as campaigns_responded

    from interactions
    where campaign_id is not null
    group by cutoff_date, customer_id

),

final as (

    select
        counts.*,
        last_survey.last_satisfaction_score,
        last_survey.last_nps_score,
        campaign_touches.campaigns_touched,
        campaign_touches.campaigns_responded,
        case when campaign_touches.campaigns_touched > 0
             then campaign_touches.campaigns_responded * 1.0 / campaign_touches.campaigns_touched end
            as campaign_response_rate

    from counts
    left join last_survey
        on counts.cutoff_date = last_survey.cutoff_date
        and counts.customer_id = last_survey.customer_id
    left join campaign_touches
        on counts.cutoff_date = campaign_touches.cutoff_date
        and counts.customer_id = campaign_touches.customer_id

)

select * from final
