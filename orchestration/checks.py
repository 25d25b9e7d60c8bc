"""Blocking asset checks on the Python-built assets: a failure stops everything downstream, publish included."""


import dagster as dg

from data_quality.score_rules import score_violations, value_violations
from orchestration.assets.scoring import customer_scores
from orchestration.assets.value_models import customer_value
from orchestration.settings import PipelineSettings


def _result(violations: dict[str, int]) -> dg.AssetCheckResult:
    failed = {rule: n for rule, n in violations.items() if n}
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{rule}: {n} row(s)" for rule, n in failed.items()) or "all rules pass",
        metadata={"rules_checked": len(violations), "rules_failed": dg.MetadataValue.json(failed)},
    )


@dg.asset_check(asset=customer_scores, blocking=True, description="customer_scores obeys the published contract.")
def customer_scores_contract(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.warehouse() as con:
        return _result(score_violations(con, "scores.customer_scores", "marts.customer_features"))


@dg.asset_check(asset=customer_value, blocking=True, description="Value predictions are finite, in range, one per customer.")
def customer_value_valid(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.warehouse() as con:
        return _result(value_violations(con, "scores.customer_value", "marts.customer_features"))


asset_checks = [customer_scores_contract, customer_value_valid]
