{{ config(meta={"dagster": {"ref": {"name": "customer_features_history"}}}) }}
-- Every cutoff's features are built from rows dated up to the end of that cutoff only.
select as_of_date, customer_id
from {{ ref('customer_features_history') }}
where last_purchase_date > as_of_date
   or recency_days < 0
   or btyd_t_days < 0
   or days_since_last_interaction < 0
   or tenure_days < 0
   or cast(created_at as date) > as_of_date
