"""Run a Great Expectations suite on a frame through a file context that keeps results and Data Docs.

The context lives in ``<data>/gx`` (beside the warehouse); each validation runs through a checkpoint
whose action rebuilds the Data Docs site (``gx/uncommitted/data_docs/local_site/index.html``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

_CONTEXTS: dict[str, object] = {}


@dataclass
class GxOutcome:
    success: bool
    failures: list[str]
    evaluated: int
    docs_index: str


def _context(root: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    key = str(root)
    if key not in _CONTEXTS:
        root.mkdir(parents=True, exist_ok=True)
        ctx = gx.get_context(mode="file", project_root_dir=str(root))
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXTS[key] = ctx
    return _CONTEXTS[key]


def validate(root: Path, asset: str, frame, suite) -> GxOutcome:
    """Validate ``frame`` (a pandas DataFrame, or a Spark DataFrame: GX's Spark engine then computes the metrics
    on Spark) with ``suite``."""
    import great_expectations as gx

    ctx = _context(Path(root))
    spark = not isinstance(frame, pd.DataFrame)
    name = "pipeline_spark" if spark else "pipeline"
    try:
        source = ctx.data_sources.get(name)
    except (KeyError, ValueError, LookupError):
        source = ctx.data_sources.add_spark(name) if spark else ctx.data_sources.add_pandas(name)
    try:
        data_asset = source.get_asset(asset)
    except LookupError:
        data_asset = source.add_dataframe_asset(asset)
    try:
        batch = data_asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        batch = data_asset.add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add_or_update(suite)
    definition = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{asset}_validation", data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=f"{asset}_checkpoint", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "SUMMARY"},
    ))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    failures = []
    evaluated = 0
    for run in result.run_results.values():
        for r in run.results:
            evaluated += 1
            if not r.success:
                cfg = r.expectation_config
                column = cfg.kwargs.get("column")
                count = r.result.get("unexpected_count")
                # counts only: the unexpected values may be identifiers or other values from the source
                failures.append(
                    f"{cfg.type}" + (f"({column})" if column else "")
                    + (f": {count} row(s)" if count else f": observed {r.result.get('observed_value')}")
                )
    return GxOutcome(result.success, failures, evaluated, str(data_docs_index(root)))


def data_docs_index(root: Path) -> Path:
    """The Data Docs site's front page in the file context at ``root``."""
    return Path(root) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


@dataclass
class SuiteResult:
    """One stored validation of a suite, as the run report and its quality page show it (no GX objects)."""
    suite: str
    asset: str
    validated_at: datetime
    success: bool
    rows: int | None
    expectations: list[dict]  # type, column, success, detail

    @property
    def failed(self) -> int:
        return sum(not e["success"] for e in self.expectations)


def _detail(result: dict) -> str:
    observed = result.get("observed_value")
    if result.get("unexpected_count"):  # counts only: the values may be identifiers from the source
        return f"{result['unexpected_count']:,} unexpected row(s)"
    if observed is not None:
        return f"observed {observed:,.4g}" if isinstance(observed, (int, float)) else f"observed {observed}"
    return ""


def validation_results(root: Path, since: datetime | None = None) -> list[SuiteResult]:
    """The newest stored validation of every suite in the file context at ``root`` (read from its JSON
    store, ``gx/uncommitted/validations/<suite>/<run name>/<time>/<batch>.json``), optionally only those
    made at or after ``since`` (UTC). The run report renders them itself: GX's Data Docs load their styles
    and scripts from CDNs and show nothing offline."""
    store = Path(root) / "gx" / "uncommitted" / "validations"
    out = []
    for suite_dir in sorted(p for p in store.glob("*") if p.is_dir()) if store.exists() else []:
        files = sorted(suite_dir.glob("*/*/*.json"), key=lambda p: p.parent.name)
        if not files:
            continue
        doc = json.loads(files[-1].read_text())
        meta = doc.get("meta", {})
        when = datetime.fromisoformat(meta.get("validation_time") or meta["run_id"]["run_time"])
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
        if since is not None and when < since:
            continue
        expectations, rows = [], None
        for r in doc.get("results", []):
            cfg = r.get("expectation_config", {})
            result = r.get("result") or {}
            rows = result.get("element_count", rows)
            expectations.append({"type": cfg.get("type", "?"), "column": cfg.get("kwargs", {}).get("column") or "",
                                 "success": bool(r.get("success")), "detail": _detail(result)})
        out.append(SuiteResult(suite=suite_dir.name, asset=meta.get("active_batch_definition", {}).get(
            "data_asset_name", suite_dir.name), validated_at=when, success=bool(doc.get("success")), rows=rows,
            expectations=expectations))
    return out
