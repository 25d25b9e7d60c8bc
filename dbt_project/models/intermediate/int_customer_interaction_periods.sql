-- One row per customer and period between two consecutive window edges (macros/cutoffs.sql: the day
-- after each cutoff, and 30, 90 and 365 days before that): the period's interactions counted by type,
-- channel and ticket status. Every trailing window of every cutoff is a run of whole periods, so
-- int_customer_interactions adds up periods instead of reading every interaction once per cutoff.

{%- set windows = var('feature_windows_days') | map('int') | list %}
{%- set edges = window_edges(windows) %}
{%- set ticket_types = "('support_ticket', 'complaint')" %}

with interactions as (

    select
        customer_id,
        interaction_type,
        channel,
        resolved,
        occurred_at,
        {{ period_end('occurred_at', edges) }} as period_end

    from {{ ref('stg_interactions') }}

),

final as (

    select
        customer_id,
        period_end,
        {%- for itype in var('interaction_types') %}
        count(case when interaction_type = '{{ itype }}' then 1 end) as n_{{ itype }},
        {%- endfor %}
        {%- for channel in var('interaction_channels') %}
        count(case when channel = '{{ channel }}' then 1 end) as n_channel_{{ channel }},
        {%- endfor %}
        count(*) as n_interactions,
        count(case when interaction_type in {{ ticket_types }} and resolved is null then 1 end) as open_tickets,
        count(case when interaction_type in {{ ticket_types }} and resolved = false then 1 end) as unresolved_tickets,
        count(case when interaction_type = 'complaint' then 1 end) as complaints_total,
        count(case when interaction_type = 'complaint' and resolved = false then 1 end) as unresolved_complaints,
        max(occurred_at) as last_interaction_at

    from interactions
    group by customer_id, period_end

)

select * from final
