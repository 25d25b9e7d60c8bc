"""Run a Great Expectations suite on a frame through a file context that keeps results and Data Docs.

The context lives in ``<data>/gx`` (beside the warehouse); each validation runs through a checkpoint
whose action rebuilds the Data Docs site (``gx/uncommitted/data_docs/local_site/index.html``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def validate(root: Path, asset: str, frame: pd.DataFrame, suite) -> GxOutcome:
    import great_expectations as gx

    ctx = _context(Path(root))
    try:
        source = ctx.data_sources.get("pipeline")
    except (KeyError, ValueError, LookupError):
        source = ctx.data_sources.add_pandas("pipeline")
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
                sample = r.result.get("partial_unexpected_list", [])[:3]
                failures.append(
                    f"{cfg.type}" + (f"({column})" if column else "")
                    + (f": {count} row(s), e.g. {sample}" if count else f": observed {r.result.get('observed_value')}")
                )
    return GxOutcome(result.success, failures, evaluated, str(data_docs_index(root)))


def data_docs_index(root: Path) -> Path:
    """The Data Docs site's front page in the file context at ``root``."""
    return Path(root) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
