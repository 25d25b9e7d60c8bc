-- Published. Customers per lifecycle stage at the end of each of the last periods (one churn horizon
-- long, ending at the as-of date), and where the customers of each stage at the start of a period
-- stood at its end: from_stage -> to_stage counts and conversion rates. Customers who joined during the
-- period come from '(joined)'. Stages follow macros/lifecycle_stage.sql.

with history as (

    select customer_id, as_of_date, lifecycle_stage from {{ ref('customer_features_history') }}

),

period_ends as (

    select distinct as_of_date as period_end
    from history
    where {{ dbt.datediff('as_of_date', as_of_date(), 'day') }} % {{ var('churn_horizon_days') }} = 0

),

periods as (

    select
        period_end,
        lag(period_end) over (order by period_end) as period_start

    from period_ends

),

transitions as (

    select
        periods.period_start,
        periods.period_end,
        coalesce(start_state.lifecycle_stage, '(joined)') as from_stage,
        end_state.lifecycle_stage as to_stage,
        count(*) as customers

    from periods
    inner join history as end_state on end_state.as_of_date = periods.period_end
    left join history as start_state
        on start_state.as_of_date = periods.period_start
        and start_state.customer_id = end_state.customer_id
    where periods.period_start is not null
    group by periods.period_start, periods.period_end, coalesce(start_state.lifecycle_stage, '(joined)'),
        end_state.lifecycle_stage

),

final as (

    select
        period_start,
        period_end,
        from_stage,
        to_stage,
        cast(case to_stage
            when 'prospect' then 1 when 'new' then 2 when 'active' then 3 when 'repeat' then 4
            when 'loyal' then 5 when 'at risk' then 6 when 'lapsed' then 7 when 'churned' then 8
        end as {{ dbt.type_bigint() }}) as to_stage_order,
        cast(customers as {{ dbt.type_bigint() }}) as customers,
        cast(sum(customers) over (partition by period_end, from_stage) as {{ dbt.type_bigint() }})
            as from_stage_customers,
        {{ ratio('customers', 'sum(customers) over (partition by period_end, from_stage)') }} as conversion_rate,
        cast(sum(customers) over (partition by period_end, to_stage) as {{ dbt.type_bigint() }})
            as to_stage_customers,
        period_end = {{ as_of_date() }} as is_latest_period,
        '{{ var("run_id") }}' as run_id

    from transitions

)

select * from final
