{#- k-anonymity: fails for every combination of `quasi_identifiers` that covers fewer than `k` rows (such a
    row could be singled out by what someone knows about a person from elsewhere). -#}
{% test k_anonymous(model, quasi_identifiers, k) %}
select {{ quasi_identifiers | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ quasi_identifiers | join(', ') }}
having count(*) < {{ k }}
{% endtest %}
