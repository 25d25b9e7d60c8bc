{#- The lifecycle stage of a customer at a cutoff, from purchase behaviour only, so that it can be
    computed at every cutoff (for the funnel) exactly as for the as-of date. First match wins:

      prospect  no completed purchase yet (a lead)
      churned   last purchase more than 365 days ago
      lapsed    last purchase 181-365 days ago
      new       first purchase within the last 90 days
      at risk   repeat buyer whose last purchase is over 90 days ago and over twice their usual gap
      loyal     5+ purchase days, at least 2 orders in the last 365 days
      repeat    2+ purchase days
      active    the rest: one purchase, 91-180 days ago -#}
{% macro lifecycle_stage(n_orders, recency_days, first_purchase_days, frequency, btyd_recency_days, orders_last_365d) -%}
    case
        when coalesce({{ n_orders }}, 0) = 0 then 'prospect'
        when {{ recency_days }} > 365 then 'churned'
        when {{ recency_days }} > 180 then 'lapsed'
        when {{ first_purchase_days }} <= 90 then 'new'
        when {{ frequency }} > 0 and {{ recency_days }} > 90
             and {{ recency_days }} > {{ ratio('2 * ' ~ btyd_recency_days, frequency) }} then 'at risk'
        when {{ frequency }} >= 4 and {{ orders_last_365d }} >= 2 then 'loyal'
        when {{ frequency }} >= 1 then 'repeat'
        else 'active'
    end
{%- endmacro %}
