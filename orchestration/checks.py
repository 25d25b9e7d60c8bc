"""Blocking asset checks on the Python-built assets: a failure stops everything downstream, publish included."""


import dagster as dg

from data_quality.score_rules import score_violations
from orchestration.assets.scoring import customer_scores
from orchestration.settings import PipelineSettings


@dg.asset_check(asset=customer_scores, blocking=True, description="customer_scores obeys the published contract.")
def customer_scores_contract(settings: PipelineSettings) -> dg.AssetCheckResult:
    with settings.warehouse() as con:
        violations = score_violations(con, "scores.customer_scores", "marts.customer_features")
    failed = {rule: n for rule, n in violations.items() if n}
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{rule}: {n} row(s)" for rule, n in failed.items()) or "all rules pass",
        metadata={"rules_checked": len(violations), "rules_failed": dg.MetadataValue.json(failed)},
    )


asset_checks = [customer_scores_contract]
