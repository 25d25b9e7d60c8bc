-- Example queries for analysts, against the serving database (read-only). After `make run`, with the project's own
-- DuckDB (prints each query's name and first rows):
--   .venv/bin/python -c "import duckdb, re; con = duckdb.connect('data/serving.duckdb', read_only=True); [print(name, con.sql(sql)) for name, sql in re.findall(r'^-- name: (\w+)\n(.*?);', open('examples/queries.sql').read(), re.M | re.S)]"
-- or run one in any DuckDB client from 1.1 on, such as the duckdb CLI (tests/test_bi_clients.py reads the file with 1.1 and 1.5).
-- Every query here runs in the test suite against a real publication (tests/test_analyst_outputs.py).

-- name: top_customers_per_tier_and_channel
-- The five highest-potential customers in each priority tier and contact channel, with what to do.
with ranked as (
    select
        priority_tier,
        action_channel,
        customer_id,
        potential_rank,
        potential_score,
        round(clv, 2) as clv,
        next_best_action,
        next_category,
        row_number() over (partition by priority_tier, action_channel order by potential_rank) as rank_in_group
    from customer_scores
)
select * from ranked
where rank_in_group <= 5
order by priority_tier, action_channel, rank_in_group;

-- name: profile_by_country_and_age_band
-- The de-identified profile (k-anonymous, no key shared with customer_scores): customers, spend and
-- consent per country and age band; generalised rows ('other', wider bands, 'suppressed') appear as they are.
select
    country,
    age_band,
    count(*) as customers,
    round(avg(spend_last_365d), 2) as avg_spend_last_365d,
    round(avg(n_orders), 1) as avg_orders,
    round(avg(case when marketing_consent then 1.0 else 0 end), 3) as consent_share
from customer_profile
group by country, age_band
order by country, age_band;

-- name: at_risk_high_value_customers
-- High-value customers who are slipping away: call them first.
select
    customer_id,
    potential_rank,
    round(clv, 2) as clv,
    round(churn_probability, 3) as churn_probability,
    lifecycle_stage,
    rfm_segment,
    top_reasons,
    next_best_action,
    action_channel
from customer_scores
where value_segment = 'high'
  and (churn_probability >= 0.5 or lifecycle_stage in ('at risk', 'lapsed'))
order by clv desc
limit 100;

-- name: segment_movement_since_last_run
-- How customers moved between RFM segments since the previous publication (empty on the first run).
select
    previous_rfm_segment,
    rfm_segment,
    count(*) as customers,
    round(sum(clv), 2) as clv
from customer_scores
where previous_rfm_segment is not null
group by previous_rfm_segment, rfm_segment
order by customers desc;

-- name: segment_value_by_country
-- RFM segments per country: size, value and the action most of them get.
select cut_value as country, segment, customers, round(share_of_customers, 3) as share,
       round(total_clv, 2) as total_clv, round(avg_churn_probability, 3) as avg_churn, recommended_action
from segment_summary
where segment_type = 'rfm_segment' and cut_type = 'country'
order by country, total_clv desc;

-- name: campaign_return
-- Campaigns by revenue after response, with cost where known.
select campaign_id, campaign_name, channel, reach, responders, round(response_rate, 3) as response_rate,
       round(revenue_after_response, 2) as revenue_after_response, campaign_cost,
       round(revenue_after_response / nullif(campaign_cost, 0), 2) as revenue_per_cost
from campaign_effectiveness
where is_campaign_total
order by revenue_after_response desc;

-- name: customer_trajectory
-- One customer night by night from customer_scores_history: score, rank, tier, segments, churn, CLV and action
-- (here today's top customer; put any customer_id).
select as_of_date, potential_score, potential_rank, priority_tier, rfm_segment, lifecycle_stage,
       round(churn_probability, 3) as churn_probability, round(clv, 2) as clv, next_best_action
from customer_scores_history
where customer_id = (select customer_id from customer_scores where potential_rank = 1)
order by as_of_date;

-- name: tier_movements_month_over_month
-- Customers moving between priority tiers from one month's last published night to the next one's.
with month_end as (
    select customer_id, as_of_date, priority_tier
    from customer_scores_history
    where as_of_date in (select max(as_of_date) from customer_scores_history
                         group by date_trunc('month', as_of_date))
), paired as (
    select customer_id, as_of_date, priority_tier,
           lag(priority_tier) over (partition by customer_id order by as_of_date) as previous_tier,
           lag(as_of_date) over (partition by customer_id order by as_of_date) as previous_night
    from month_end
)
select previous_night, as_of_date as night, previous_tier, priority_tier, count(*) as customers
from paired
where previous_tier is not null
group by previous_night, as_of_date, previous_tier, priority_tier
order by night, previous_tier, priority_tier;

-- name: tier_sizes_over_time
-- Each priority tier's size, value and churn risk night by night, from segment_history.
select as_of_date, segment as priority_tier, customers, round(total_clv, 2) as total_clv,
       round(avg_churn_probability, 3) as avg_churn_probability
from segment_history
where segment_type = 'priority_tier' and cut_type = 'all'
order by priority_tier, as_of_date;
