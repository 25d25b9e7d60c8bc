{{ config(meta={"dagster": {"ref": {"name": "customer_features"}}}) }}
-- customer_features has exactly the customers of dim_customers.
select 'count mismatch' as problem
from (select count(*) as n from {{ ref('dim_customers') }}) c
cross join (select count(*) as n, count(distinct customer_id) as d from {{ ref('customer_features') }}) f
where c.n <> f.n or f.n <> f.d
