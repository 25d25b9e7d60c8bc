{#- On a table built from the contract (a *_checked model, filtered to the rows that keep it): fails for
    every row that breaks a contract rule visible on the row alone (a required value missing, a number that
    is not finite, a value out of its range or set, a date before CRM_EARLIEST_DATE). The rules come from the
    one declaration (var 'contract'), so this test checks the generated SQL against it; it returns no
    values, only the source row numbers. No model downstream ever sees a non-finite number. -#}
{% test contract_holds(model, entity) %}
{%- set spec = var('contract')[entity] -%}
{%- set checks = ('present', 'finite', 'min', 'in_range', 'accepted', 'not_before_earliest') -%}
select _source_row
from {{ model }}
where 1 = 0
{%- for rule in spec['rules'] if rule['check'] in checks %}
   or ({{ contract_violated(rule, spec['columns']) }})
{%- endfor %}
{% endtest %}
