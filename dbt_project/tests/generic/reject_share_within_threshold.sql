{#- On a quarantine model: fails when more than var('max_bad_row_share') of the entity's rows broke the
    contract (rows read from the files, plus lines the ingest could not read as records, which sit in the
    quarantine with a source_line). The source is then too broken to trust, so the run stops before
    publishing (the quarantine table itself is already built, for inspection). -#}
{% test reject_share_within_threshold(model, entity) %}
select
    quarantined.n as rejected_rows,
    raw_rows.n + quarantined.unread as source_rows,
    quarantined.n * 1.0 / (raw_rows.n + quarantined.unread) as rejected_share,
    {{ var('max_bad_row_share') }} as threshold
from (select count(*) as n, count(source_line) as unread from {{ model }}) as quarantined
cross join (select count(*) as n from {{ source('raw', entity) }}) as raw_rows
where raw_rows.n + quarantined.unread > 0
  and quarantined.n * 1.0 / (raw_rows.n + quarantined.unread) > {{ var('max_bad_row_share') }}
{% endtest %}
