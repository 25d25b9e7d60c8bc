{#- On a *_checked model: fails when it does not hold exactly one row per raw row of the entity, i.e.
    when a row would be lost (or invented) between the source files and the contract check. -#}
{% test row_count_matches_source(model, entity) %}
select
    checked.n as checked_rows,
    raw_rows.n as raw_rows
from (select count(*) as n from {{ model }}) as checked
cross join (select count(*) as n from {{ source('raw', entity) }}) as raw_rows
where checked.n <> raw_rows.n
{% endtest %}
