"""The run report asset: a self-contained HTML report of the published run (see ``orchestration/report.py``)."""


import dagster as dg

from data_quality.gx_gate import data_docs_index
from orchestration.assets.publish import PUBLICATION, check_evaluations
from orchestration.report import SECTIONS, CheckSummary, build_report, write_report
from orchestration.settings import PipelineSettings

RUN_REPORT = dg.AssetKey(["serving", "run_report"])


def check_summary(context: dg.AssetExecutionContext, settings: PipelineSettings) -> CheckSummary:
    """Every asset check evaluated in this run, from the Dagster event log."""
    summary = CheckSummary(data_docs=data_docs_index(settings.gx_dir))
    for evaluation in check_evaluations(context.instance, context.run_id):
        summary.rows.append((evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.passed,
                             evaluation.description or ""))
        summary.passed += int(evaluation.passed)
        summary.failed += int(not evaluation.passed)
    return summary


@dg.asset(key=RUN_REPORT, deps=[PUBLICATION], group_name="publish", kinds={"html"},
          description="One self-contained HTML report per run (reports/run_<run_id>.html) and the latest at "
          "reports/latest.html: headline numbers, distributions, segments, funnel, top 50, models, checks.")
def run_report(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    text = build_report(settings.serving_file, settings.reports_dir / context.run_id,
                        check_summary(context, settings), context.run_id)
    path, latest = write_report(text, settings.reports_dir, context.run_id)
    context.log.info(f"run report: {latest}")
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)),
                                          "latest": dg.MetadataValue.path(str(latest)),
                                          "bytes": path.stat().st_size})


@dg.asset_check(asset=RUN_REPORT, blocking=True,
                description="The latest report is this run's and has every section and its plots inlined.")
def report_complete(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    latest = settings.reports_dir / "latest.html"
    text = latest.read_text(encoding="utf-8") if latest.exists() else ""
    missing = [s for s in SECTIONS if f"<h2>{s}</h2>" not in text]
    images = text.count("data:image/png;base64,")
    passed = bool(text) and context.run.run_id in text and not missing and images >= 4
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=f"{images} inline plots; missing sections: {missing or 'none'}",
                               metadata={"images": images})
