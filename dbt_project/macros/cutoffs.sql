{#- The cutoffs, known when the SQL is compiled. Features and outcomes are computed per cutoff date: the
    as-of date (scoring) and the back-dated cutoffs the pipeline passes (var feature_cutoffs) for training and
    back-tests. Because the dates are known up front, orders and interactions are not joined to every cutoff
    after them (rows times cutoffs; only survey answers, a small share, still are). A model that summarises
    history per cutoff instead
      - reduces its source once to the grain its windows need (customer days, or periods between the
        window edges below), and
      - aggregates the reduced rows for every cutoff, either in one pass with one column per cutoff
        (sum(case when <row dated by cutoff k> then ... end), picked back per row with at_cutoff) when the
        figures are few, or with one aggregation per cutoff (union all) when one column per cutoff and
        figure would make a wide aggregation that no longer fits in memory at a million customers. -#}

{#- The cutoff dates as ISO strings, sorted and unique, none after the as-of date (the run cannot see past it). -#}
{% macro feature_cutoff_dates() -%}
    {%- set as_of = modules.datetime.date.fromisoformat(var('as_of_date') | string) -%}
    {%- set dates = [] -%}
    {%- for cutoff in [var('as_of_date')] + var('feature_cutoffs', []) -%}
        {%- set day = modules.datetime.date.fromisoformat(cutoff | string) -%}
        {%- if day <= as_of and day.isoformat() not in dates -%}
            {%- do dates.append(day.isoformat()) -%}
        {%- endif -%}
    {%- endfor -%}
    {{- return(dates | sort) -}}
{%- endmacro %}

{#- The back-dated cutoffs only (every cutoff but the as-of date): the ones with outcomes after them. -#}
{% macro backdated_cutoff_dates() -%}
    {%- set as_of = modules.datetime.date.fromisoformat(var('as_of_date') | string).isoformat() -%}
    {{- return(feature_cutoff_dates() | reject('equalto', as_of) | list) -}}
{%- endmacro %}

{#- A date literal: the ISO date `iso_date` plus `days` days (negative: before it), computed when compiling. -#}
{% macro date_literal(iso_date, days=0) -%}
    {%- set day = modules.datetime.date.fromisoformat(iso_date | string) + modules.datetime.timedelta(days=days | int) -%}
    cast('{{ day.isoformat() }}' as date)
{%- endmacro %}

{#- A date column on day `from_days` to day `to_days` after the cutoff `iso_date`, both included (0 = the cutoff
    itself, negative = before it): a trailing window of d days that ends with the cutoff is (-(d - 1), 0). -#}
{% macro date_within(column, iso_date, from_days, to_days) -%}
    {{ column }} >= {{ date_literal(iso_date, from_days) }} and {{ column }} <= {{ date_literal(iso_date, to_days) }}
{%- endmacro %}

{#- Picks, on a row of cutoff `cutoff_column`, the column `<name>_<k>` of that row's cutoff (k: its position in
    `cutoff_dates`, from 1), turning the one-column-per-cutoff aggregates back into one value per row. -#}
{% macro at_cutoff(name, cutoff_dates, cutoff_column='cutoff_date') -%}
    case {{ cutoff_column }}
        {%- for cutoff in cutoff_dates %}
        when {{ date_literal(cutoff) }} then {{ name }}_{{ loop.index }}
        {%- endfor %}
    end
{%- endmacro %}

{#- The window edges of every cutoff: the day after it (its end) and `days` days before that end, for each of
    `windows` (ISO dates, sorted, unique). Between two consecutive edges lies a period that is either wholly
    inside or wholly outside each cutoff's windows, so rows can be counted once per period and a window's count
    is a sum over whole periods. -#}
{% macro window_edges(windows) -%}
    {%- set edges = [] -%}
    {%- for cutoff in feature_cutoff_dates() -%}
        {%- for days in [0] + (windows | map('int') | list) -%}
            {%- set edge = modules.datetime.date.fromisoformat(cutoff) + modules.datetime.timedelta(days=1 - days) -%}
            {%- if edge.isoformat() not in edges -%}
                {%- do edges.append(edge.isoformat()) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {{- return(edges | sort) -}}
{%- endmacro %}

{#- The end of the period a timestamp or date `column` falls in: the first of `edges` after it (null after the
    last edge, which is the day after the as-of date: nothing in view is dated then). -#}
{% macro period_end(column, edges) -%}
    case
        {%- for edge in edges %}
        when {{ column }} < {{ date_literal(edge) }} then {{ date_literal(edge) }}
        {%- endfor %}
    end
{%- endmacro %}
