# Writes models/marts/_marts.yml (run from dbt_project/models): the feature columns are many and
# regular, so their descriptions and tests are generated from one list instead of typed twice.
# A column's spec: "key" (unique and not null), "required" (not null), "range0" (>= 0), "trend" (-1..1),
# "rel" (not null, a customer of dim_customers), or None. Not-null and ranges are column rules
# (config.meta.rules), checked by the model's one column_rules test (tests/generic/column_rules.sql).
types = ["support_ticket", "complaint", "campaign_response", "email_open", "email_click", "web_visit", "survey"]
chans = ["email", "phone", "chat", "web", "social", "store"]
cols = [
 ("customer_id", "Customer key (text).", "key"),
 ("as_of_date", "The run's as-of date: features see data up to the end of this date.", "required"),
 ("created_at", "First contact / account creation.", "required"),
 ("tenure_days", "Days from created_at to the as-of date.", "range0"),
 ("country", "Country code (normalised).", None),
 ("region", "Region.", None),
 ("acquisition_channel", "How the customer was acquired.", None),
 ("age_band", "Age band at the as-of date ('unknown' without birth date).", "required"),
 ("gender", "Gender as given.", None),
 ("is_b2b", "True for business accounts (company name present).", "required"),
 ("marketing_consent", "May be contacted for marketing (null = unknown).", None),
 ("preferred_channel", "Preferred contact channel.", None),
 ("has_purchased", "At least one completed order.", "required"),
 ("n_orders", "Completed orders.", "range0"),
 ("frequency", "BTYD frequency: purchase days after the first one.", "range0"),
 ("first_purchase_date", "Date of the first completed order.", None),
 ("last_purchase_date", "Date of the latest completed order.", None),
 ("recency_days", "Days since the last completed order (null without purchases).", "range0"),
 ("btyd_recency_days", "BTYD recency: days from first to last purchase.", "range0"),
 ("btyd_t_days", "BTYD T: days from the first purchase to the as-of date.", "range0"),
 ("monetary_total", "Sum of completed order amounts.", "range0"),
 ("monetary_mean", "Mean completed order amount (null without purchases).", None),
 ("repeat_spend_mean", "Mean spend per repeat purchase day (Gamma-Gamma input; null without repeats).", None),
 ("purchase_rate_per_year", "Completed orders per year of tenure.", "range0"),
 ("n_cancelled", "Cancelled orders.", "range0"),
 ("n_refunded", "Refunded orders.", "range0"),
 ("orders_last_90d", "Completed orders in the last 90 days.", "range0"),
 ("orders_prev_90d", "Completed orders in the 90 days before those.", "range0"),
 ("spend_last_90d", "Spend in the last 90 days.", None),
 ("spend_prev_90d", "Spend in the 90 days before those.", None),
 ("order_trend", "(last 90 d - previous 90 d) / (sum of both) completed orders; 0 without orders; -1..1.", "trend"),
 ("orders_last_365d", "Completed orders in the last 365 days.", "range0"),
 ("spend_last_365d", "Spend in the last 365 days (the naive baseline's prediction).", None),
 ("n_categories", "Distinct product categories bought.", "range0"),
 ("top_category", "Most-bought product category.", None),
 ("top_category_share", "Share of purchases in the top category.", None),
]
for d in (30, 90, 365):
    for t in types:
        cols.append((f"n_{t}_{d}d", f"{t.replace('_',' ')} interactions in the last {d} days.", "range0"))
    for c in chans:
        cols.append((f"n_channel_{c}_{d}d", f"Interactions on the {c} channel in the last {d} days.", "range0"))
    cols.append((f"n_interactions_{d}d", f"All interactions in the last {d} days.", "range0"))
cols += [
 ("open_tickets", "Support tickets and complaints with no resolution recorded.", "range0"),
 ("unresolved_tickets", "Support tickets and complaints marked unresolved.", "range0"),
 ("complaints_total", "Complaints so far.", "range0"),
 ("unresolved_complaints", "Complaints marked unresolved.", "range0"),
 ("last_satisfaction_score", "Latest survey satisfaction (1..5).", None),
 ("last_nps_score", "Latest NPS answer (0..10).", None),
 ("campaign_response_rate", "Campaigns responded to / campaigns interacted with.", None),
 ("days_since_last_interaction", "Days since the latest interaction (null without any).", "range0"),
 ("lifecycle_stage", "prospect, new, active, repeat, loyal, at risk, lapsed or churned (rules: macros/lifecycle_stage.sql).",
  "stage"),
]
out = ["version: 2", "", "models:"]
RULES = {"key": "not_null: true", "required": "not_null: true", "rel": "not_null: true", "stage": "not_null: true",
         "range0": "min: 0", "trend": "min: -1, max: 1"}
TESTS = {"key": ["        data_tests: [unique]"],
         "rel": ["        data_tests:", "          - relationships:", "              arguments:",
                 "                to: ref('dim_customers')", "                field: customer_id"],
         "stage": ["        data_tests: [{accepted_values: {arguments: {values: "
                   "[prospect, new, active, repeat, loyal, 'at risk', lapsed, churned]}}}]"]}
def model(name, desc, columns, tests=None):
    out.append(f"  - name: {name}")
    out.append(f"    description: \"{desc}\"")
    tests = (tests or []) + (["- column_rules"] if any(t in RULES for _, _, t in columns) else [])
    if len(tests) == 1:
        out.append(f"    data_tests: [{tests[0][2:]}]")
    elif tests:
        out.append("    data_tests:")
        out.extend("      " + t for t in tests)
    out.append("    columns:")
    for n, d, t in columns:
        out.append(f"      - name: {n}")
        out.append(f"        description: \"{d}\"")
        if t in RULES:
            out.append(f"        config: {{meta: {{rules: {{{RULES[t]}}}}}}}")
        out.extend(TESTS.get(t, []))
    out.append("")
model("dim_customers", "One row per known customer (created by the end of the as-of date). Internal: holds PII.", [
 ("customer_id", "Customer key (text).", "key"),
 ("created_at", "Earliest creation timestamp.", "required"),
 ("email", "Normalised e-mail (PII, never published).", None),
 ("phone", "Normalised phone (PII, never published).", None),
 ("full_name", "Name (PII, never published).", None),
 ("age_band", "Age band at the as-of date.", "required"),
 ("is_b2b", "Business account.", "required"),
 ("tenure_days", "Days from created_at to the as-of date.", "range0"),
])
model("fct_orders", "Orders of known customers up to the as-of date.", [
 ("order_id", "Order key.", "key"),
 ("customer_id", "Customer key.", "rel"),
 ("ordered_at", "When the order was placed.", "required"),
 ("amount", "Order value in the reporting currency.", "required"),
 ("is_purchase", "Completed order (counts as a purchase).", "required"),
])
model("fct_interactions", "Interactions of known customers up to the as-of date.", [
 ("interaction_id", "Interaction key.", "key"),
 ("customer_id", "Customer key.", "rel"),
 ("occurred_at", "When it happened.", "required"),
])
model("customer_features", "One row per known customer: every model's features as of the run's as-of date.", cols)
hist = [(n, d, ("required" if n == "customer_id" else t)) for n, d, t in cols]
hist[1] = ("as_of_date", "The cutoff date these features are computed as of (the run's as-of date or a back-dated cutoff).", "required")
model("customer_features_history",
      "One row per cutoff date and customer known by then: the one definition of every feature, for scoring (as-of date) and for training and back-tests (earlier cutoffs).",
      hist, tests=["- unique_combination:", "    arguments:", "      columns: [as_of_date, customer_id]"])
model("customer_outcomes",
      "Per back-dated cutoff and customer: purchases and spend after the cutoff (labels for training and back-tests).",
      [("as_of_date", "The cutoff date.", "required"),
       ("customer_id", "Customer key.", "required"),
       ("churn_window_complete", "The churn window after the cutoff ends by the run's as-of date.", "required"),
       ("value_window_complete", "The value back-test window after the cutoff (the CLV horizon, or shorter when the history is short: ml/windows.py) ends by the run's as-of date.", "required"),
       ("churned", "No completed order in the churn window after the cutoff.", "required"),
       ("orders_churn_window", "Completed orders in the churn window after the cutoff.", "range0"),
       ("orders_value_window", "Completed orders in the value window after the cutoff.", "range0"),
       ("purchase_days_value_window", "Days with a completed order in the value window (BTYD transactions).", "range0"),
       ("spend_value_window", "Spend on completed orders in the value window after the cutoff.", "range0")],
      tests=["- unique_combination:", "    arguments:", "      columns: [as_of_date, customer_id]"])
# models written by hand (customer_profile, with its enforced contract) follow the marker and are kept
MARKER = "  # --- written by hand below; generate_marts_yml.py keeps this part ---"
previous = open('marts/_marts.yml').read()
kept = previous[previous.index(MARKER):] if MARKER in previous else MARKER + "\n"
open('marts/_marts.yml', 'w').write("\n".join(out) + "\n" + kept)
