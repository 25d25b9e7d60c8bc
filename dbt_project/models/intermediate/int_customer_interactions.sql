-- Per cutoff and customer: interaction counts by type and by channel over trailing windows, ticket
-- status, last survey answers and campaign response, all as of the cutoff.
--
-- Built to scale: the window edges of every cutoff (cutoff end minus 30, 90 and 365 days, and the cutoff
-- end itself) are known when the SQL is compiled, so each interaction is put once into the period between
-- two consecutive edges, and interactions are counted per customer and period (one pass over the
-- interactions). A cutoff's window is then a sum over whole periods, instead of joining every
-- interaction to every cutoff after it. Campaigns are reduced to each customer's first touch and first
-- response per campaign before they meet the cutoffs.

{%- set windows = var('feature_windows_days') | map('int') | list %}
{%- set max_window = windows | max %}
{%- set cutoff_dates = ([var('as_of_date')] + var('feature_cutoffs', [])) | unique | sort %}
{%- set as_of = modules.datetime.date.fromisoformat(var('as_of_date')) %}
{%- set ns = namespace(edges=[]) %}
{%- for c in cutoff_dates %}
    {%- set cutoff_end = modules.datetime.date.fromisoformat(c) + modules.datetime.timedelta(days=1) %}
    {%- if modules.datetime.date.fromisoformat(c) <= as_of %}
        {%- set ns.edges = ns.edges + [cutoff_end.isoformat()] %}
        {%- for d in windows %}
            {%- set ns.edges = ns.edges + [(cutoff_end - modules.datetime.timedelta(days=d)).isoformat()] %}
        {%- endfor %}
    {%- endif %}
{%- endfor %}
{%- set edges = ns.edges | unique | sort %}

with cutoffs as (

    select
        cutoff_date,
        cutoff_end,
        -- the periods each cutoff's windows cover: period k runs from edge k-1 to edge k (period 0: before
        -- the first edge)
        case
            {%- for edge in edges %}
            when cutoff_end = cast('{{ edge }}' as date) then {{ loop.index }}
            {%- endfor %}
        end as end_period,
        {%- for d in windows %}
        case
            {%- for edge in edges %}
            when {{ dbt.dateadd('day', -d, 'cutoff_end') }} = cast('{{ edge }}' as date) then {{ loop.index }}
            {%- endfor %}
        end as start_period_{{ d }}d{{ "," if not loop.last }}
        {%- endfor %}

    from {{ ref('int_cutoffs') }}

),

interactions as (

    select
        stg_interactions.*,
        case
            {%- for edge in edges %}
            when occurred_at < cast('{{ edge }}' as date) then {{ loop.index0 }}
            {%- endfor %}
            else {{ edges | length }}
        end as period

    from {{ ref('stg_interactions') }} as stg_interactions

),

per_period as (

    select
        customer_id,
        period,
        {%- for itype in var('interaction_types') %}
        sum(case when interaction_type = '{{ itype }}' then 1 else 0 end) as n_{{ itype }},
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        sum(case when channel = '{{ channel }}' then 1 else 0 end) as n_channel_{{ channel }},
        {%- endfor %}
        count(*) as n_interactions,
        sum(case when interaction_type in ('support_ticket', 'complaint') and resolved is null then 1 else 0 end)
            as open_tickets,
        sum(case when interaction_type in ('support_ticket', 'complaint') and resolved = false then 1 else 0 end)
            as unresolved_tickets,
        sum(case when interaction_type = 'complaint' then 1 else 0 end) as complaints_total,
        sum(case when interaction_type = 'complaint' and resolved = false then 1 else 0 end) as unresolved_complaints,
        max(occurred_at) as last_interaction_at

    from interactions
    group by customer_id, period

),

all_time as (

    select
        cutoffs.cutoff_date,
        per_period.customer_id,
        sum(per_period.open_tickets) as open_tickets,
        sum(per_period.unresolved_tickets) as unresolved_tickets,
        sum(per_period.complaints_total) as complaints_total,
        sum(per_period.unresolved_complaints) as unresolved_complaints,
        max(per_period.last_interaction_at) as last_interaction_at

    from per_period
    inner join cutoffs on per_period.period < cutoffs.end_period
    group by cutoffs.cutoff_date, per_period.customer_id

),

windowed as (

    select
        cutoffs.cutoff_date,
        per_period.customer_id,
        {%- for d in windows %}
        {%- set in_window = 'per_period.period >= cutoffs.start_period_' ~ d ~ 'd' %}
        {%- for itype in var('interaction_types') %}
        sum(case when {{ in_window }} then per_period.n_{{ itype }} else 0 end) as n_{{ itype }}_{{ d }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        sum(case when {{ in_window }} then per_period.n_channel_{{ channel }} else 0 end) as n_channel_{{ channel }}_{{ d }}d,
        {%- endfor %}
        sum(case when {{ in_window }} then per_period.n_interactions else 0 end) as n_interactions_{{ d }}d{{ "," if not loop.last }}
        {%- endfor %}

    from per_period
    inner join cutoffs
        on per_period.period < cutoffs.end_period
        and per_period.period >= cutoffs.start_period_{{ max_window }}d
    group by cutoffs.cutoff_date, per_period.customer_id

),

surveys as (

    select
        cutoffs.cutoff_date,
        interactions.customer_id,
        interactions.satisfaction_score,
        interactions.nps_score,
        row_number() over (
            partition by cutoffs.cutoff_date, interactions.customer_id
            order by interactions.occurred_at desc, interactions.interaction_id desc
        ) as satisfaction_rank_desc

    from interactions
    inner join cutoffs on interactions.occurred_at < cutoffs.cutoff_end
    where interactions.satisfaction_score is not null or interactions.nps_score is not null

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

    from interactions
    where campaign_id is not null
    group by customer_id, campaign_id

),

campaign_touches as (

    select
        cutoffs.cutoff_date,
        campaign_firsts.customer_id,
        count(*) as campaigns_touched,
        cast(sum(case when campaign_firsts.first_response_at < cutoffs.cutoff_end then 1 else 0 end)
            as {{ dbt.type_bigint() }}) as campaigns_responded

    from campaign_firsts
    inner join cutoffs on campaign_firsts.first_touch_at < cutoffs.cutoff_end
    group by cutoffs.cutoff_date, campaign_firsts.customer_id

),

final as (

    select
        all_time.cutoff_date,
        all_time.customer_id,
        {%- for d in windows %}
        {%- for itype in var('interaction_types') %}
        coalesce(windowed.n_{{ itype }}_{{ d }}d, 0) as n_{{ itype }}_{{ d }}d,
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        coalesce(windowed.n_channel_{{ channel }}_{{ d }}d, 0) as n_channel_{{ channel }}_{{ d }}d,
        {%- endfor %}
        coalesce(windowed.n_interactions_{{ d }}d, 0) as n_interactions_{{ d }}d,
        {%- endfor %}
        all_time.open_tickets,
        all_time.unresolved_tickets,
        all_time.complaints_total,
        all_time.unresolved_complaints,
        all_time.last_interaction_at,
        last_survey.last_satisfaction_score,
        last_survey.last_nps_score,
        campaign_touches.campaigns_touched,
        campaign_touches.campaigns_responded,
        case when campaign_touches.campaigns_touched > 0
             then campaign_touches.campaigns_responded * 1.0 / campaign_touches.campaigns_touched end
            as campaign_response_rate

    from all_time
    left join windowed
        on all_time.cutoff_date = windowed.cutoff_date
        and all_time.customer_id = windowed.customer_id
    left join last_survey
        on all_time.cutoff_date = last_survey.cutoff_date
        and all_time.customer_id = last_survey.customer_id
    left join campaign_touches
        on all_time.cutoff_date = campaign_touches.cutoff_date
        and all_time.customer_id = campaign_touches.customer_id

)

select * from final
