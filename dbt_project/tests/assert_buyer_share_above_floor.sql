{{ config(meta={"dagster": {"ref": {"name": "customer_features"}}}) }}
-- At least var('min_buyer_share') of the known customers have a completed purchase in view. Far fewer
-- means orders no longer reach their customers (ids formatted differently in the two exports, dates
-- shifted past the as-of date): scoring such a table would rank everybody as a prospect.
select
    count(*) as customers,
    sum(case when has_purchased then 1 else 0 end) as buyers,
    {{ var("min_buyer_share") }} as floor
from {{ ref('customer_features') }}
having count(*) > 0
   and sum(case when has_purchased then 1 else 0 end) * 1.0 / count(*) < {{ var("min_buyer_share") }}
