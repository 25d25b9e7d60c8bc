-- Raw orders rows that break the data contract: kept, never dropped, with the rule they break.
{{ contract_quarantine_model('orders') }}
