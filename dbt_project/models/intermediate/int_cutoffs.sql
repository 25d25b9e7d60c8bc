-- The dates features are computed for: the as-of date (scoring) and the back-dated cutoffs the
-- models train and back-test on (passed by the pipeline as the var feature_cutoffs). Cutoffs after the
-- as-of date are dropped: the run cannot see past it (macros/cutoffs.sql, which the per-cutoff models
-- read the same dates from when they are compiled).

{%- set cutoff_dates = feature_cutoff_dates() %}

with cutoffs as (

    {%- for cutoff in cutoff_dates %}
    select {{ date_literal(cutoff) }} as cutoff_date
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

final as (

    select
        cutoff_date,
        {{ add_days('cutoff_date', 1) }} as cutoff_end,
        cutoff_date = {{ as_of_date() }} as is_as_of

    from cutoffs

)

select * from final
