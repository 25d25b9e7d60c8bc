"""Blocking asset checks written in Python: on the Python-built assets, and where a dbt test cannot say it
(Great Expectations suites, the outlier share naming its rows, drift against the last publication). A
failure stops everything downstream, publish included."""


import dagster as dg

import json
from datetime import date, datetime, timezone

from data_quality.contract import ENTITIES, Entity, Rule
from data_quality.quarantine import name_rows, rows_of_rule
from data_quality.pii import PERSONAL_TABLES_WITH_CUSTOMER_ID, count_rows_of, erased_ids
from data_quality.score_rules import churn_violations, value_violations
from ml.registry import population_stability, score_reference
from orchestration.assets.churn import customer_churn
from orchestration.assets.ingest import CUSTOMER_PSEUDONYMS, ERASURE_REQUESTS
from orchestration.assets.publish import publication
from orchestration.assets.scoring import customer_scores
from orchestration.assets.value_models import customer_value
from orchestration.memory import release_memory
from orchestration.settings import PipelineSettings


def _result(violations: dict[str, int]) -> dg.AssetCheckResult:
    failed = {rule: n for rule, n in violations.items() if n}
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{rule}: {n} row(s)" for rule, n in failed.items()) or "all rules pass",
        metadata={"rules_checked": len(violations), "rules_failed": dg.MetadataValue.json(failed)},
    )


def build_gx_check(asset_key: dg.AssetKey, suite_name: str, expected_count_sql: str | None) -> dg.AssetChecksDefinition:
    """A blocking check that validates the asset's table with its Great Expectations suite."""
    table = ".".join(asset_key.path)

    @dg.asset_check(asset=asset_key, name="gx_suite", blocking=True,
                    description=f"Great Expectations suite data_quality/suites.py:{suite_name} on {table}.")
    def _check(settings: PipelineSettings) -> dg.AssetCheckResult:
        from data_quality.gx_gate import validate  # Great Expectations (and SciPy) load only when a check runs
        from data_quality.suites import COLUMNS, SUITES

        columns = ", ".join(COLUMNS[suite_name])
        with settings.open_warehouse() as warehouse:
            rows = int(warehouse.scalar(f"select count(*) from {table}"))
            expected = int(warehouse.scalar(expected_count_sql)) if expected_count_sql else None
            if not rows and not expected:  # an optional entity that is absent: nothing to check
                return dg.AssetCheckResult(passed=True, description="no rows (optional source absent)")
            # validated where the data is: a pandas frame read from DuckDB through Arrow (the connection closed
            # before GX runs), a Spark DataFrame on Spark (computed there by GX's Spark engine)
            data = warehouse.native(f"select {columns} from {table}")
        suite = SUITES[suite_name](expected, datetime.now(timezone.utc).replace(tzinfo=None))
        outcome = validate(settings.gx_dir, suite_name, data, suite)
        del data
        release_memory()  # the frame can be millions of rows; the next step should not start above it
        return dg.AssetCheckResult(
            passed=outcome.success, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(outcome.failures) or f"{outcome.evaluated} expectations met",
            metadata={"expectations": outcome.evaluated, "rows": rows,
                      "data_docs": dg.MetadataValue.path(outcome.docs_index)},
        )

    return _check


# the source rows are held to the contract by dbt (contract_holds, the quarantine's tests); GX guards what
# the models read and what they wrote
GX_CHECKS = [
    build_gx_check(dg.AssetKey(["marts", "customer_features"]), "customer_features", "select count(*) from marts.dim_customers"),
    build_gx_check(customer_scores.key, "customer_scores", "select count(*) from marts.customer_features"),
]

def build_outlier_share_check(entity: Entity, rule: Rule) -> dg.AssetChecksDefinition:
    """Stops the run when more of the entity's rows than ``max_outlier_share`` break its not_outlier rule.

    A few implausible amounts are typos and are quarantined; many are a broken export (amounts in cents, a
    shifted column) that the bound cannot be trusted against. The message names the rows (file and row
    number), never their values. It checks the contract step's output, so nothing after it runs."""
    checked = dg.AssetKey(["staging", f"stg_{entity.name}_checked"])

    @dg.asset_check(asset=checked, name=f"{rule.column}_outliers_within_share", blocking=True,
                    description=f"At most CRM_MAX_OUTLIER_SHARE of the {entity.name} have an {rule.column} beyond the "
                    "outlier bound (CRM_AMOUNT_OUTLIER_FACTOR x the 99.9th percentile of the valid values).")
    def _check(settings: PipelineSettings) -> dg.AssetCheckResult:
        with settings.open_warehouse() as warehouse:
            total = int(warehouse.scalar(f"select count(*) from staging.stg_{entity.name}_checked"))
            rows = rows_of_rule(warehouse, entity.name, rule.reason)
        share, limit = (len(rows) / total if total else 0.0), settings.max_outlier_share
        passed = share <= limit
        description = (
            f"{len(rows):,} of {total:,} rows beyond the {rule.column} outlier bound ({share:.2%}, limit {limit:.2%})"
            if passed else
            f"{entity.name}: {len(rows):,} of {total:,} rows ({share:.2%}, limit {limit:.2%}, CRM_MAX_OUTLIER_SHARE) "
            f"have an {rule.column} beyond the outlier bound (CRM_AMOUNT_OUTLIER_FACTOR x the 99.9th percentile): "
            f"{name_rows(rows)}. Check the export's {rule.column} column (a unit change, a shifted column); if the "
            f"values are real, raise CRM_AMOUNT_OUTLIER_FACTOR."
        )
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=description,
                                   metadata={"rows": len(rows), "share": share, "limit": limit})

    return _check


OUTLIER_CHECKS = [build_outlier_share_check(entity, rule) for entity in ENTITIES.values()
                  for rule in entity.rules if rule.check == "not_outlier"]

PSI_COLUMNS = ("churn_probability", "potential_score")  # bounded, continuous: population stability index
MEAN_COLUMNS = ("clv", "expected_spend")  # money with a mass at a few values: relative shift of the mean
MAX_MEAN_SHIFT = 0.5


@dg.asset_check(asset=customer_scores, blocking=True,
                description="Key score distributions have not drifted too far from the last publication "
                "(PSI of churn_probability and potential_score; relative mean shift of clv and expected_spend).")
def scores_drift(settings: PipelineSettings) -> dg.AssetCheckResult:
    import duckdb

    if not settings.serving_file.exists():
        return dg.AssetCheckResult(passed=True, description="no earlier publication to compare with")
    cols = ", ".join(PSI_COLUMNS + MEAN_COLUMNS)
    with duckdb.connect(str(settings.serving_file), read_only=True) as con:
        previous = con.sql(f"select {cols} from customer_scores").to_arrow_table().to_pandas()
    with settings.open_warehouse() as warehouse:
        current = warehouse.frame(f"select {cols} from scores.customer_scores")
    psi = {c: round(population_stability(score_reference(previous[c].to_numpy()), current[c].to_numpy()), 4)
           for c in PSI_COLUMNS}
    shift = {c: round(abs(current[c].mean() - previous[c].mean()) / max(abs(previous[c].mean()), 1e-9), 4)
             for c in MEAN_COLUMNS}
    over = [f"{c} PSI {v} > {settings.max_drift_psi} (CRM_MAX_DRIFT_PSI)" for c, v in psi.items() if v > settings.max_drift_psi]
    over += [f"{c} mean moved {v:.0%} > {MAX_MEAN_SHIFT:.0%}" for c, v in shift.items() if v > MAX_MEAN_SHIFT]
    return dg.AssetCheckResult(
        passed=not over, severity=dg.AssetCheckSeverity.ERROR,
        description=("drift against the last publication: " + "; ".join(over)) if over else f"PSI {psi}, mean shift {shift}",
        metadata={"psi": dg.MetadataValue.json(psi), "mean_shift": dg.MetadataValue.json(shift)},
    )


@dg.asset_check(asset=customer_value, blocking=True, description="Value predictions are finite, in range, one per customer.")
def customer_value_valid(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.open_warehouse() as warehouse:
        return _result(value_violations(warehouse, "scores.customer_value", "marts.customer_features"))


@dg.asset_check(asset=customer_churn, blocking=True, description="Churn predictions in range, one per customer, with reasons.")
def customer_churn_valid(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.open_warehouse() as warehouse:
        return _result(churn_violations(warehouse, "scores.customer_churn", "marts.customer_features"))


@dg.asset_check(asset=customer_scores, blocking=True,
                description="The value and churn champions' back-test metrics clear the configured floors.")
def model_metric_floors(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    failed, seen = [], {}
    with settings.open_warehouse() as warehouse:
        for task, metric, floor in (("clv_spend", "normalised_gini", settings.min_value_gini),
                                    ("churn", "roc_auc", settings.min_churn_auc)):
            champ = warehouse.rows(
                "select model_name, value from ops.model_performance where run_id = ? and task = ? and metric = ? "
                "and is_champion", [context.run.run_id, task, metric])
            if not champ:
                seen[task] = "no back-test this run (documented fallback)"
                continue
            name, value = champ[0]
            seen[task] = f"{name} {metric} {value:.3f} (floor {floor})"
            if value < floor:
                failed.append(f"{task}: {name} {metric} {value:.3f} is below the floor {floor}")
    return dg.AssetCheckResult(passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
                               description="; ".join(failed) or "metrics clear their floors",
                               metadata={"metrics": dg.MetadataValue.json(seen)})


def build_row_count_check(entity: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dg.AssetKey(["raw", entity]), name="row_count_within_band", blocking=True,
                    description=f"raw.{entity} has a row count within a band of the last published run.")
    def _check(settings: PipelineSettings) -> dg.AssetCheckResult:
        with settings.open_warehouse() as warehouse:
            now = int(warehouse.scalar(f"select count(*) from raw.{entity}"))
            last = _last_published_rows_in(settings, warehouse)
        previous = json.loads(last).get(entity) if last else None
        band = settings.row_count_band
        if not previous:
            return dg.AssetCheckResult(passed=True, description=f"{now:,} rows; no published run to compare with",
                                       metadata={"rows": now})
        ratio = now / previous
        passed = 1 / band <= ratio <= band
        description = (
            f"{now:,} rows vs {previous:,} in the last published run ({ratio:.2f}x)" if passed else
            f"{entity}: {now:,} rows is {ratio:.1f}x the {previous:,} of the last published run (band: 1/{band:g} to "
            f"{band:g}x). If the change is real, rerun with CRM_ROW_COUNT_BAND set higher."
        )
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=description,
                                   metadata={"rows": now, "previous_rows": previous, "ratio": ratio})

    return _check


def _last_published_rows_in(settings: PipelineSettings, warehouse) -> str | None:
    """The source's rows per entity (JSON) of the last published run, from the run log of the run's engine."""
    if settings.engine == "spark":
        from orchestration.publication_spark import RUN_LOG as log
    else:
        log = "ops.pipeline_runs"
    schema, table = log.split(".")
    if table not in warehouse.tables(schema):
        return None
    return warehouse.scalar(f"select rows_in from {log} where published order by finished_at desc limit 1")


@dg.asset_check(asset=publication, blocking=True,
                description="The serving database holds exactly this run's scores, in customer_scores and its "
                "history (read back after the swap); an earlier night's only in the history.")
def serving_matches_run(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    import duckdb

    run_id = context.run.run_id
    if settings.engine == "spark":  # the release's views in the Spark catalog (no score history there yet)
        with settings.open_warehouse() as warehouse:
            runs = [r[0] for r in warehouse.rows("select distinct run_id from serving.customer_scores")]
            n = warehouse.scalar("select count(*) from serving.customer_scores")
            expected = warehouse.scalar("select count(*) from scores.customer_scores")
        return dg.AssetCheckResult(passed=runs == [run_id] and n == expected, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"the serving views show run(s) {runs} with {n:,} rows; expected "
                                   f"{expected:,} of this run")
    with duckdb.connect(str(settings.serving_file), read_only=True) as con:
        runs = [r[0] for r in con.execute("select distinct run_id from customer_scores").fetchall()]
        n = con.execute("select count(*) from customer_scores").fetchall()[0][0]
        in_history = con.execute("select count(*) from customer_scores_history where run_id = ?", [run_id]).fetchall()[0][0]
        later = con.execute("select count(*) from pipeline_runs where run_id = ? and as_of_date < "
                            "(select max(as_of_date) from customer_scores)", [run_id]).fetchall()[0][0]
    with settings.warehouse() as con:
        expected = con.execute("select count(*) from scores.customer_scores").fetchall()[0][0]
    if later:  # a backfilled night: the history holds it, the latest tables a later night
        return dg.AssetCheckResult(passed=in_history == expected, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"an earlier night: customer_scores_history holds {in_history:,} rows of "
                                   f"this run; expected {expected:,} (customer_scores stays on run(s) {runs})")
    passed = runs == [run_id] and n == expected and in_history == expected
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=f"serving holds run(s) {runs} with {n:,} rows and {in_history:,} history "
                               f"rows of this run; expected {expected:,}")


@dg.asset_check(asset=dg.AssetKey(["staging", "stg_orders_checked"]), name="source_is_fresh", blocking=True,
                description="The newest order that keeps the contract is recent: a warning past CRM_MAX_SOURCE_AGE_DAYS "
                "before the run's as-of date (or today), a stop past CRM_BLOCK_SOURCE_AGE_DAYS.")
def source_is_fresh(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    from orchestration.settings import CHECKED_ORDER_DATES

    reference, against = ((date.fromisoformat(settings.run_as_of_date), "the as-of date") if settings.run_as_of_date
                          else (settings.today(), "today"))
    with settings.open_warehouse() as warehouse:
        newest = warehouse.scalar(f"select max(d) from ({CHECKED_ORDER_DATES}) checked where d <= ?", [reference])
    age = (reference - newest).days if newest else None
    warn, block = settings.max_source_age_days, settings.block_source_age_days
    facts = {"newest_order": newest.isoformat() if newest else None, "reference": reference.isoformat(),
             "age_days": age, "warn_after_days": warn, "block_after_days": block}
    if age is None:
        return dg.AssetCheckResult(passed=True, description="no order keeps the contract (other checks say so)",
                                   metadata=facts)
    said = (f"the newest order that keeps the contract is dated {newest}, {age} days before {against} {reference}: "
            "the source may not have moved since")
    if block and age > block:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=facts,
            description=f"stale source: {said} (limit {block} days, CRM_BLOCK_SOURCE_AGE_DAYS). Check that the "
            "export ran; if the data is right as it is, run with --as-of the date it runs up to, or raise the limit.")
    if warn and age > warn:
        context.log.warning(f"stale source? {said} (warning after {warn} days, CRM_MAX_SOURCE_AGE_DAYS)")
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=facts,
                                   description=f"{said} (warning after {warn} days, CRM_MAX_SOURCE_AGE_DAYS)")
    return dg.AssetCheckResult(passed=True, metadata=facts,
                               description=f"newest order {newest}, {age} days before {against} {reference}")


@dg.asset_check(asset=ERASURE_REQUESTS, blocking=True,
                description="The erasure register holds customer ids only (none empty).")
def erasure_register_valid(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.warehouse() as con:
        ids = erased_ids(con)
    return _result({"empty customer ids in ops.erasure_requests": sum(1 for i in ids if not str(i).strip())})


def build_erasure_check(entity: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dg.AssetKey(["raw", entity]), name="erasure_applied", blocking=True,
                    description=f"No customer of the erasure register is left in raw.{entity}.")
    def _check(settings: PipelineSettings) -> dg.AssetCheckResult:
        with settings.warehouse() as con:  # the erasure register
            ids = erased_ids(con)
        with settings.open_warehouse() as warehouse:
            left = count_rows_of(warehouse, f"raw.{entity}", ids)
        return _result({f"erased customers' rows left in raw.{entity}": left})

    return _check


@dg.asset_check(asset=CUSTOMER_PSEUDONYMS, blocking=True,
                description="One pseudonym per known customer: none null, none shared by two customers.")
def pseudonyms_one_per_customer(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.open_warehouse() as warehouse:
        n_ids, n_keys, n_null, n_customers = warehouse.rows(
            "select count(distinct customer_id), count(distinct customer_key), count(*) - count(customer_key), "
            "(select count(distinct trim(customer_id)) from raw.customers where nullif(trim(customer_id), '') is not null) "
            "from ops.customer_pseudonyms")[0]
    return _result({"null pseudonyms": n_null, "pseudonyms shared by several customers": n_ids - n_keys,
                    "customers without a pseudonym": n_customers - n_ids})


asset_checks = [
    erasure_register_valid, pseudonyms_one_per_customer,
    *[build_erasure_check(entity) for entity in PERSONAL_TABLES_WITH_CUSTOMER_ID],
    customer_value_valid, customer_churn_valid, model_metric_floors, serving_matches_run, scores_drift, *GX_CHECKS,
    *OUTLIER_CHECKS, source_is_fresh,
    *[build_row_count_check(entity) for entity in ENTITIES],
]
