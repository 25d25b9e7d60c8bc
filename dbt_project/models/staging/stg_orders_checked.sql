-- Every raw orders row, typed, with reject_reason: the contract rule it breaks (null when it keeps the
-- contract). The rules are declared once, in dbt_project.yml (vars.contract.orders); macros/contract.sql.
{{ config(tags=['contract']) }}
{{ contract_checked_model('orders') }}
