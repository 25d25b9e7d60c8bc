{{ config(meta={"dagster": {"ref": {"name": "customer_features_history"}}}) }}
-- What the models read (features per cutoff, labels, the category mix) holds no NaN or Infinity in any
-- floating-point column: scikit-learn stops on them and a BTYD fit goes wrong. The contract keeps
-- non-finite numbers out of staging (parse_number, test contract_holds); this holds everything built on
-- it to the same promise, whatever a mart computes (DuckDB divides by zero into Infinity).
{%- set relations = [ref('customer_features_history'), ref('customer_outcomes'), ref('int_customer_categories')] %}
{%- set parts = [] %}
{%- if execute %}
    {%- for relation in relations %}
        {%- set finite = [] %}
        {%- for column in adapter.get_columns_in_relation(relation) if column.is_float() %}
            {%- do finite.append(is_finite(adapter.quote(column.name))) %}
        {%- endfor %}
        {%- if finite %}
            {%- do parts.append("select '" ~ relation.identifier ~ "' as model, count(*) as rows_not_finite from "
                                ~ relation ~ " where not (" ~ finite | join(' and ') ~ ")") %}
        {%- endif %}
    {%- endfor %}
{%- endif %}
select model, rows_not_finite
from ({{ parts | join(' union all ') if parts else "select 'none' as model, 0 as rows_not_finite" }}) as counted
where rows_not_finite > 0
