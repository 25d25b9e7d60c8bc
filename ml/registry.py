"""Model registry on disk: versioned artifacts with model cards, a champion pointer per warehouse, a decision log.

Layout (``models/`` by default; artifacts are not committed)::

    models/<task>/<version>/model.joblib      the trained object
    models/<task>/<version>/card.json         version, lineage, windows, features, metrics, fingerprint, libraries
    models/<task>/<version>/card.md           the same for people
    models/<task>/champion-<scope>.json       {"version": ..., "since": ...}: the champion of one warehouse
    models/<task>/decisions.jsonl             one line per nightly decision (reuse, retrain, promote, keep)

A trained model belongs to the warehouse and source it was trained on and to the as-of date it was
trained for (``Lineage``, recorded on its card). Champions are kept per warehouse (``scope`` is a hash of
the warehouse path), and ``reuse_blockers`` refuses a champion from another source, one trained on data
after the run's as-of date, or one whose features differ from today's columns.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import pandas as pd


def library_versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}


def fingerprint(X: pd.DataFrame, y: np.ndarray | None = None) -> str:
    """A content hash of the training data (values, column names and labels)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, X.columns)).encode())
    h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    if y is not None:
        h.update(np.asarray(y).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Lineage:
    """Where a model's training data came from: the warehouse file and the source it was loaded from."""

    warehouse: str
    source: str

    @property
    def scope(self) -> str:
        return hashlib.sha256(self.warehouse.encode()).hexdigest()[:12]


@dataclass
class ModelCard:
    task: str
    version: str
    model_name: str
    trained_for_as_of: str
    trained_at: str
    train_cutoffs: list[str]
    label_window_end: str
    backtest_train_cutoffs: list[str]
    backtest_test_cutoff: str
    features: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, dict[str, float]]
    data_fingerprint: str
    library_versions: dict[str, str]
    n_train_rows: int
    calibration: str
    score_reference: dict = field(default_factory=dict)  # decile edges of the scores at training time
    notes: list[str] = field(default_factory=list)
    warehouse: str = ""  # lineage: the warehouse and source the model was trained on
    source: str = ""

    def markdown(self) -> str:
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in self.metrics.items() if not k.startswith("calib_"))
        base = "\n".join(
            f"| {name} | {m.get('roc_auc', float('nan')):.4f} | {m.get('brier', float('nan')):.4f} |"
            for name, m in self.baseline_metrics.items()
        )
        return (
            f"# Model card: {self.task} / {self.version}\n\n"
            f"- model: {self.model_name} (calibration: {self.calibration})\n"
            f"- trained for as-of date {self.trained_for_as_of} at {self.trained_at}\n"
            f"- lineage: warehouse `{self.warehouse}`, source `{self.source}` (reused only there, and only by runs "
            f"as of {self.label_window_end} or later)\n"
            f"- training cutoffs: {', '.join(self.train_cutoffs)}; labels end {self.label_window_end}\n"
            f"- back-test: trained on {', '.join(self.backtest_train_cutoffs)}, tested on cutoff "
            f"{self.backtest_test_cutoff}\n"
            f"- training rows: {self.n_train_rows:,}; data fingerprint `{self.data_fingerprint[:16]}`\n"
            f"- libraries: {', '.join(f'{k} {v}' for k, v in self.library_versions.items())}\n\n"
            f"## Back-test metrics\n\n| metric | value |\n|---|---|\n{rows}\n\n"
            f"## Baselines on the same window\n\n| model | ROC AUC | Brier |\n|---|---|---|\n{base}\n\n"
            f"## Features ({len(self.features)})\n\n{', '.join(self.features)}\n\n"
            + ("## Notes\n\n" + "\n".join(f"- {n}" for n in self.notes) + "\n" if self.notes else "")
        )


class Registry:
    """One task's models (``root/task``); ``lineage`` scopes the champion pointer to one warehouse."""

    def __init__(self, root: Path, task: str, lineage: Lineage | None = None):
        self.dir = Path(root) / task
        self.task = task
        self.lineage = lineage

    @property
    def _pointer(self) -> Path:
        return self.dir / (f"champion-{self.lineage.scope}.json" if self.lineage else "champion.json")

    def save(self, card: ModelCard, model) -> Path:
        folder = self.dir / card.version
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        (folder / "card.json").write_text(json.dumps(asdict(card), indent=2, default=str))
        (folder / "card.md").write_text(card.markdown())
        return folder

    def load(self, version: str):
        folder = self.dir / version
        card = ModelCard(**json.loads((folder / "card.json").read_text()))
        return card, joblib.load(folder / "model.joblib")

    def save_record(self, version: str, record: dict, markdown: str) -> Path:
        """A card without an artifact (models that are refitted every run and published with their card)."""
        folder = self.dir / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "card.json").write_text(json.dumps(record, indent=2, default=str))
        (folder / "card.md").write_text(markdown)
        return folder

    def champion(self):
        pointer = self._pointer
        if not pointer.exists():
            return None
        version = json.loads(pointer.read_text())["version"]
        if not (self.dir / version / "model.joblib").exists():
            return None
        return self.load(version)

    def promote(self, version: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._pointer.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"version": version, "since": datetime.now(timezone.utc).isoformat()}))
        tmp.replace(self._pointer)

    def log(self, decision: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "decisions.jsonl").open("a") as fh:
            fh.write(json.dumps({"at": datetime.now(timezone.utc).isoformat(), **decision}, default=str) + "\n")

    def decisions(self) -> list[dict]:
        path = self.dir / "decisions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def score_reference(scores: np.ndarray) -> dict:
    edges = np.quantile(scores, np.linspace(0, 1, 11)[1:-1]).tolist()
    return {"decile_edges": edges}


def population_stability(reference: dict, scores: np.ndarray) -> float:
    """PSI of ``scores`` against the deciles recorded at training time (0 = same distribution)."""
    edges = reference.get("decile_edges")
    if not edges or len(scores) == 0:
        return 0.0
    counts = np.bincount(np.searchsorted(np.asarray(edges), scores, side="right"), minlength=10)
    actual = np.clip(counts / counts.sum(), 1e-4, None)
    expected = np.full(10, 0.1)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reuse_blockers(card: ModelCard, *, lineage: Lineage, as_of: date, features: list[str]) -> list[str]:
    """Why a registered model may not score this run at all (empty: it may). Checked before anything else,
    and on the fallback path too: a model from another warehouse or source, one trained on labels after the
    as-of date, or one whose features differ from today's columns never scores."""
    blockers = []
    if (card.warehouse, card.source) != (lineage.warehouse, lineage.source):
        blockers.append(f"trained on another warehouse or source ({card.warehouse or 'unrecorded'} from "
                        f"{card.source or 'unrecorded'})")
    if date.fromisoformat(card.label_window_end) > as_of or date.fromisoformat(card.trained_for_as_of) > as_of:
        blockers.append(f"trained on data up to {card.label_window_end}, after the as-of date {as_of}")
    if set(card.features) != set(features):
        gone, new = sorted(set(card.features) - set(features)), sorted(set(features) - set(card.features))
        blockers.append("features changed: " + "; ".join(
            part for part in (f"no longer available: {', '.join(gone[:5])}" if gone else "",
                              f"new: {', '.join(new[:5])}" if new else "") if part))
    return blockers


def retrain_reason(card: ModelCard | None, *, as_of: date, cadence_days: int, features: list[str],
                   psi: float | None, psi_threshold: float, current_auc: float | None,
                   degrade_tolerance: float) -> str | None:
    """Why the champion must be retrained tonight, or None to reuse it."""
    if card is None:
        return "no champion yet"
    age = (as_of - date.fromisoformat(card.trained_for_as_of)).days
    if age < 0:
        return f"champion was trained for a later as-of date ({card.trained_for_as_of})"
    if age >= cadence_days:
        return f"cadence: champion trained for {card.trained_for_as_of}, {age} days ago (every {cadence_days} days)"
    missing = sorted(set(card.features) - set(features))
    if missing:
        return f"features changed: {', '.join(missing[:5])} no longer available"
    if psi is not None and psi > psi_threshold:
        return f"drift: score PSI {psi:.3f} > {psi_threshold}"
    if current_auc is not None and current_auc < card.metrics.get("roc_auc", 0) - degrade_tolerance:
        return f"degraded: ROC AUC {current_auc:.3f} on the newest window vs {card.metrics['roc_auc']:.3f} recorded"
    return None
