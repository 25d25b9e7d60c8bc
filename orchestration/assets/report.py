"""The run report asset: the run's one-page briefing in HTML and its quality page (see ``orchestration/report.py``).

The report code (matplotlib) is imported when the step runs, not when the definitions load."""

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import dagster as dg

from orchestration.assets.publish import PUBLICATION, check_evaluations, is_warning
from orchestration.memory import release_memory
from orchestration.settings import PipelineSettings

if TYPE_CHECKING:
    from orchestration.report import CheckSummary

RUN_REPORT = dg.AssetKey(["serving", "run_report"])
REPORT_CHECKS = ["report_complete"]  # the checks on this asset: they run after the report is written


def check_summary(context: dg.AssetExecutionContext, settings: PipelineSettings) -> "CheckSummary":
    """Every asset check evaluated in this run so far (Dagster event log) and the Great Expectations
    validations made since the run started."""
    from data_quality.gx_gate import data_docs_index, validation_results
    from orchestration.report import CheckSummary

    record = context.instance.get_run_record_by_id(context.run_id)
    started = (datetime.fromtimestamp(record.start_time, timezone.utc).replace(tzinfo=None)
               if record and record.start_time else None)
    summary = CheckSummary(data_docs=data_docs_index(settings.gx_dir), later_checks=list(REPORT_CHECKS),
                           gx_suites=validation_results(settings.gx_dir, since=started))
    for evaluation in check_evaluations(context.instance, context.run_id):
        warned = is_warning(evaluation)
        summary.rows.append((evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.passed,
                             ("warning: " if warned else "") + (evaluation.description or "")))
        summary.passed += int(evaluation.passed or warned)
        summary.failed += int(not evaluation.passed and not warned)
    return summary


@dg.asset(key=RUN_REPORT, deps=[PUBLICATION], group_name="publish", kinds={"html"},
          description="The run's one-page briefing (reports/run_<run_id>.html, the latest at reports/latest.html): "
          "changes since the last publication, five headline numbers, actions by channel, distributions, segments, "
          "lifecycle flows, top customers per tier and action, model health, campaigns, quality; and the run's "
          "quality page (reports/<run_id>/quality.html). Self-contained, opens offline.")
def run_report(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from orchestration.published import open_previous, open_published
    from orchestration.report import build_quality_page, build_report, write_quality_page, write_report

    release_memory()  # the last step of a long night: start from what the publication left, not its peak
    checks = check_summary(context, settings)
    run_folder = settings.reports_dir / context.run_id
    with open_published(settings) as published:
        if published is None:
            raise RuntimeError(f"nothing is published in {settings.serving_display}: no report to write")
        # materialised on its own (after a night killed in this step, say) this run published nothing: the report
        # is the publication's, under its run
        shown = context.run_id if published.recorded(context.run_id) else (
            published.published_run_id() or context.run_id)
        as_of = published.as_of()
        with open_previous(settings, shown) as previous:
            text = build_report(published, previous, run_folder, checks, shown, currency=settings.reporting_currency,
                                quality_href=f"{context.run_id}/quality.html")
    path, latest = write_report(text, settings.reports_dir, context.run_id)
    data_docs = checks.data_docs
    docs_href = (os.path.relpath(data_docs, run_folder) if data_docs and data_docs.exists() else None)
    quality = write_quality_page(build_quality_page(checks, context.run_id,
                                                    as_of or "?",
                                                    docs_href),
                                 settings.reports_dir, context.run_id)
    context.log.info(f"run report: {latest}")
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)),
                                          "latest": dg.MetadataValue.path(str(latest)),
                                          "quality_page": dg.MetadataValue.path(str(quality)),
                                          "bytes": path.stat().st_size})


@dg.asset_check(asset=RUN_REPORT, blocking=True,
                description="The latest report is this run's, has every section and its figures inlined, and "
                "links nothing outside its folder.")
def report_complete(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    from orchestration.report import SECTIONS

    latest = settings.reports_dir / "latest.html"
    text = latest.read_text(encoding="utf-8") if latest.exists() else ""
    missing = [s for s in SECTIONS if f"<h2>{s}</h2>" not in text]
    images = text.count("data:image/png;base64,")
    absolute = text.count('href="file:') + text.count('src="file:') + text.count('href="/')
    passed = bool(text) and context.run.run_id in text and not missing and images >= 4 and absolute == 0
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=f"{images} inline figures; missing sections: {missing or 'none'}; "
                               f"absolute links: {absolute}",
                               metadata={"images": images, "absolute_links": absolute})
