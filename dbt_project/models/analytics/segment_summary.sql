-- Published. Per kind of segment, segment and demographic/geographic cut: size, share, revenue, value,
-- average scores and the recommended action. segment_type names the kind of segment
-- (rfm_segment, lifecycle_stage, value_segment, priority_tier, behaviour_cluster); cut_type the cut
-- ('all' for every customer, country, age_band), so that one row of cut_type 'all' sums up a segment.
--
-- recommended_action is the action that serves the segment's value best: of the actions its customers
-- get (next_best_action, which already says what each customer may be offered), the one whose customers
-- hold the largest share of the segment's CLV; no_action only when no customer of the segment gets an
-- action. Ties: more customers, then the action's name. recommended_action_clv_share is that share
-- (of customers when the segment's CLV is 0).

{%- set segment_types = ['rfm_segment', 'lifecycle_stage', 'value_segment', 'priority_tier', 'behaviour_cluster_label'] %}
{%- set cut_types = ['all', 'country', 'age_band'] %}

with scores as (

    select * from {{ ref('customer_scores') }}

),

features as (

    select customer_id, country, age_band, spend_last_365d from {{ ref('customer_features') }}

),

customers as (

    select
        scores.*,
        features.spend_last_365d,
        'all' as cut_all,
        coalesce(features.country, 'unknown') as cut_country,
        coalesce(features.age_band, 'unknown') as cut_age_band

    from scores
    inner join features on scores.customer_id = features.customer_id

),

by_segment as (

    {%- for segment_type in segment_types %}
    {%- for cut_type in cut_types %}
    select
        '{{ segment_type | replace("_label", "") }}' as segment_type,
        cast({{ segment_type }} as {{ dbt.type_string() }}) as segment,
        '{{ cut_type }}' as cut_type,
        cut_{{ cut_type }} as cut_value,
        next_best_action,
        count(*) as customers,
        sum(spend_last_365d) as revenue_last_365d,
        sum(clv) as total_clv,
        sum(churn_probability) as sum_churn_probability,
        sum(potential_score) as sum_potential_score
    from customers
    group by {{ segment_type }}, cut_{{ cut_type }}, next_best_action
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

actions_ranked as (

    select
        segment_type, segment, cut_type, cut_value, next_best_action,
        customers as action_customers,
        total_clv as action_clv,
        row_number() over (
            partition by segment_type, segment, cut_type, cut_value
            order by
                case when next_best_action = 'no_action' then 1 else 0 end,
                total_clv desc,
                customers desc,
                next_best_action
        ) as action_rank

    from by_segment

),

totals as (

    select
        segment_type, segment, cut_type, cut_value,
        sum(customers) as customers,
        sum(revenue_last_365d) as revenue_last_365d,
        sum(total_clv) as total_clv,
        sum(sum_churn_probability) / sum(customers) as avg_churn_probability,
        sum(sum_potential_score) / sum(customers) as avg_potential_score

    from by_segment
    group by segment_type, segment, cut_type, cut_value

),

final as (

    select
        totals.segment_type,
        totals.segment,
        totals.cut_type,
        totals.cut_value,
        cast(totals.customers as {{ dbt.type_bigint() }}) as customers,
        {{ ratio('totals.customers', 'sum(totals.customers) over (
            partition by totals.segment_type, totals.cut_type, totals.cut_value)') }} as share_of_customers,
        cast(totals.revenue_last_365d as double) as revenue_last_365d,
        cast(totals.total_clv as double) as total_clv,
        cast(totals.total_clv / totals.customers as double) as avg_clv,
        cast(totals.avg_churn_probability as double) as avg_churn_probability,
        cast(totals.avg_potential_score as double) as avg_potential_score,
        actions_ranked.next_best_action as recommended_action,
        cast(
            case
                when totals.total_clv > 0 then actions_ranked.action_clv / totals.total_clv
                else {{ ratio('actions_ranked.action_customers', 'totals.customers') }}
            end as double
        ) as recommended_action_clv_share,
        {{ as_of_date() }} as as_of_date,
        '{{ var("run_id") }}' as run_id

    from totals
    inner join actions_ranked
        on totals.segment_type = actions_ranked.segment_type
        and totals.segment = actions_ranked.segment
        and totals.cut_type = actions_ranked.cut_type
        and totals.cut_value = actions_ranked.cut_value
        and actions_ranked.action_rank = 1

)

select * from final
