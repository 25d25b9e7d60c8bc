"""One column_rules test per model (dbt_project/tests/generic/column_rules.sql) checks every not-null, range and
finiteness rule its yml declares per column, in one scan; a failure names the model, the columns, the rules and
how many rows break each, and never a value (issue 13: fewer, stronger dbt tests).

On a copy of a real pipeline run's warehouse: the run's own column_rules tests passed; breaking customer_scores
(values above a maximum, below a minimum, not finite, null) makes real dbt fail that test, and the failure line
says what broke; an unbroken model tested in the same dbt call passes."""

from __future__ import annotations

import json
import shutil
import subprocess

import dagster as dg
import duckdb
import pytest

from orchestration.dbt_project import DBT_PROJECT_DIR, dbt_executable, step_target_path
from orchestration.failures import column_rules_failures, column_rules_sentence, run_outcome

STEP = "dbt_analytics"
CHECK = "column_rules_customer_scores_"
UNBROKEN = "column_rules_segment_summary_"
RULES_FILE = "models/analytics/_analytics.yml"


def _results(target) -> tuple[dict[str, dict], dict]:
    """The step's last dbt results by node name, and the vars dbt ran with."""
    results = json.loads((target / "run_results.json").read_text())
    return {r["unique_id"].split(".")[2]: r for r in results["results"]}, results["args"]["vars"]


@pytest.fixture(scope="module")
def broken(two_publications, tmp_path_factory):
    """A copy of the fixture's work folder whose customer_scores breaks four rules, after `dbt test` of the
    customer_scores and segment_summary column rules with the vars of the run that built it."""
    work, _, _ = two_publications
    copy = tmp_path_factory.mktemp("column_rules") / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("logs", "models", "serving*"))
    warehouse = copy / "warehouse.duckdb"
    target = step_target_path(warehouse, STEP)
    run_results, dbt_vars = _results(target)  # the published run's own results, before this test's dbt call
    with duckdb.connect(str(warehouse)) as con:
        ids = [r[0] for r in con.execute("select customer_id from analytics.customer_scores where p_alive > 0 "
                                         "order by customer_id limit 7").fetchall()]
        assert len(ids) == 7
        con.execute("update analytics.customer_scores set churn_probability = 1.5 where customer_id in (?, ?, ?)",
                    ids[:3])
        con.execute("update analytics.customer_scores set p_alive = -0.25 where customer_id in (?, ?)", ids[3:5])
        con.execute("update analytics.customer_scores set expected_spend = 'infinity' where customer_id = ?", ids[5:6])
        con.execute("update analytics.customer_scores set clv = null where customer_id = ?", ids[6:])
    dbt_vars = {**dbt_vars, "warehouse_path": str(warehouse)}
    proc = subprocess.run(
        [dbt_executable(), "test", "--select", CHECK, UNBROKEN, "--vars", json.dumps(dbt_vars),
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(target), "--log-path", str(target)],
        cwd=DBT_PROJECT_DIR, capture_output=True, text=True, timeout=300)
    return warehouse, run_results, proc, ids


def test_the_runs_column_rules_passed_and_replace_the_per_column_tests(broken):
    _, run_results, _, _ = broken
    rules = {name: r["status"] for name, r in run_results.items() if name.startswith("column_rules_")}
    assert rules == {f"column_rules_{m}_": "pass" for m in
                     ("customer_scores", "segment_summary", "lifecycle_funnel", "campaign_effectiveness")}
    assert not [n for n in run_results if n.startswith(("not_null_", "accepted_range_"))]


def test_a_broken_model_fails_naming_columns_rules_and_rows(broken):
    warehouse, _, proc, ids = broken
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f"Failure in test {CHECK}" in proc.stdout
    after, _ = _results(step_target_path(warehouse, STEP))
    assert (after[CHECK]["status"], after[CHECK]["failures"]) == ("fail", 7)  # rows breaking a rule, summed
    assert after[UNBROKEN]["status"] == "pass"
    rows = column_rules_failures(warehouse, STEP, CHECK)
    assert rows == [("customer_scores", "churn_probability", "max 1", 3, RULES_FILE),
                    ("customer_scores", "p_alive", "min 0", 2, RULES_FILE),
                    ("customer_scores", "expected_spend", "finite", 1, RULES_FILE),
                    ("customer_scores", "clv", "not_null", 1, RULES_FILE)]
    assert column_rules_failures(warehouse, STEP, UNBROKEN) == []
    assert column_rules_sentence(rows) == (
        "customer_scores.churn_probability above its maximum 1 in 3 rows; customer_scores.p_alive below its minimum "
        "0 in 2 rows; customer_scores.expected_spend not finite (NaN or Infinity) in 1 row; customer_scores.clv null "
        f"in 1 row (column rules in dbt_project/{RULES_FILE}): fix what builds customer_scores, or the rule if "
        "these values are right")
    assert not [i for i in ids if i in str(rows)]


def test_the_failure_line_of_a_column_rules_check(broken):
    """run_outcome on a Dagster run whose dbt_analytics step reports the failed check as dagster-dbt does (a
    failed check with dbt's failed row count): with the warehouse it names the broken rules; without, the count."""
    warehouse, _, _, _ = broken
    scores = dg.AssetKey(["analytics", "customer_scores"])

    @dg.multi_asset(name=STEP, specs=[dg.AssetSpec(scores)],
                    check_specs=[dg.AssetCheckSpec(CHECK, asset=scores, blocking=True)])
    def dbt_analytics():
        yield dg.Output(None, output_name="analytics__customer_scores")
        yield dg.AssetCheckResult(check_name=CHECK, asset_key=scores, passed=False,
                                  metadata={"dagster_dbt/failed_row_count": 7})

    result = dg.materialize([dbt_analytics], raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    line = f"check {CHECK} on analytics/customer_scores failed"
    assert run_outcome(result.all_events).lines == [line + " (dbt test: 7 failing row(s))"]
    assert run_outcome(result.all_events, warehouse=warehouse).lines == [
        line + ": " + column_rules_sentence(column_rules_failures(warehouse, STEP, CHECK))]


def test_the_sentence_shows_six_broken_rules_and_counts_the_rest():
    rows = [("m", f"c{i}", "not_null", 1000 + i, "models/x.yml") for i in range(8)]
    assert column_rules_sentence(rows) == (
        "m.c0 null in 1,000 rows; m.c1 null in 1,001 rows; m.c2 null in 1,002 rows; m.c3 null in 1,003 rows; "
        "m.c4 null in 1,004 rows; m.c5 null in 1,005 rows and 2 more broken rule(s) (column rules in "
        "dbt_project/models/x.yml): fix what builds m, or the rule if these values are right")


def test_the_yml_declares_rules_per_column_and_one_column_rules_test_per_model():
    """Not-null and ranges are column rules now: no column keeps a not_null or accepted_range test, a model with
    rules has exactly one column_rules test (and one without has none), and every published column has a
    description, every published number a rule."""
    import yaml

    published_numbers = []
    for path in sorted((DBT_PROJECT_DIR / "models").rglob("_*.yml")):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            tests = [t if isinstance(t, str) else next(iter(t)) for t in model.get("data_tests", [])]
            columns = model.get("columns", [])
            ruled = [c["name"] for c in columns if ((c.get("config") or {}).get("meta") or {}).get("rules")]
            assert tests.count("column_rules") == (1 if ruled else 0), model["name"]
            for column in columns:
                names = [t if isinstance(t, str) else next(iter(t)) for t in column.get("data_tests", [])]
                assert not {"not_null", "accepted_range"} & set(names), (model["name"], column["name"])
                if "analytics" in path.parts or model["name"] == "customer_profile":
                    assert column.get("description"), (model["name"], column["name"])
                    if column.get("data_type") in ("double", "bigint", "integer") and column["name"] not in ruled:
                        published_numbers.append(f"{model['name']}.{column['name']}")
    assert published_numbers == []
