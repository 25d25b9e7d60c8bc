-- The dates features are computed for: the as-of date (scoring) and the back-dated cutoffs the
-- models train and back-test on (passed by the pipeline as the var feature_cutoffs). Cutoffs after the
-- as-of date are dropped: the run cannot see past it.

{%- set cutoffs = ([var('as_of_date')] + var('feature_cutoffs', [])) | unique | sort %}

with cutoffs as (

    {%- for cutoff in cutoffs %}
    select cast('{{ cutoff }}' as date) as cutoff_date
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

final as (

    select
        cutoff_date,
        {{ dbt.dateadd('day', 1, 'cutoff_date') }} as cutoff_end,
        cutoff_date = {{ as_of_date() }} as is_as_of

    from cutoffs
    where cutoff_date <= {{ as_of_date() }}

)

select * from final
