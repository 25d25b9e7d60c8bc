"""The run's parameters, one resource that every asset reads.

Each field can be set three ways, highest priority first: Dagster run config
(``resources: {settings: {config: {...}}}``), the ``crm-potential run`` flags (which write run config),
and environment variables (``CRM_*``, read when the definitions load). Defaults follow the data contract.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
from pydantic import Field, field_validator

from ml.name_numbers import format_name_numbers
from ml.potential import DEFAULT_WEIGHTS
from ml.ranking import DEFAULT_TIER_BOUNDS
from ml.registry import Lineage
from ml.windows import Windows, plan_windows

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# field name -> environment variable
ENV_VARS = {
    "source_dir": "CRM_SOURCE_DIR",
    "as_of_date": "CRM_AS_OF_DATE",
    "warehouse_path": "CRM_WAREHOUSE",
    "serving_path": "CRM_SERVING",
    "churn_horizon_days": "CRM_CHURN_HORIZON_DAYS",
    "clv_horizon_days": "CRM_CLV_HORIZON_DAYS",
    "annual_discount_rate": "CRM_ANNUAL_DISCOUNT_RATE",
    "reporting_currency": "CRM_REPORTING_CURRENCY",
    "dbt_threads": "CRM_DBT_THREADS",
    "model_registry_dir": "CRM_MODEL_REGISTRY",
    "churn_retrain_days": "CRM_CHURN_RETRAIN_DAYS",
    "churn_min_customers": "CRM_CHURN_MIN_CUSTOMERS",
    "churn_stacked_cutoffs": "CRM_CHURN_STACKED_CUTOFFS",
    "max_bad_row_share": "CRM_MAX_BAD_ROW_SHARE",
    "row_count_band": "CRM_ROW_COUNT_BAND",
    "min_value_gini": "CRM_MIN_VALUE_GINI",
    "min_churn_auc": "CRM_MIN_CHURN_AUC",
    "min_buyer_share": "CRM_MIN_BUYER_SHARE",
    "serving_versions": "CRM_SERVING_VERSIONS",
    "duckdb_memory_limit": "CRM_DUCKDB_MEMORY_LIMIT",
    "max_drift_psi": "CRM_MAX_DRIFT_PSI",
    "erase_file": "CRM_ERASE_FILE",
    "potential_weights": "CRM_POTENTIAL_WEIGHTS",
    "tier_bounds": "CRM_TIER_BOUNDS",
    "action_rules_file": "CRM_ACTION_RULES",
    "response_window_days": "CRM_RESPONSE_WINDOW_DAYS",
}


def data_dir() -> Path:
    """Where generated data, the warehouse and the serving database live by default."""
    return Path(os.environ.get("CRM_DATA_DIR", PROJECT_ROOT / "data"))


class SettingsError(ValueError):
    """A run parameter is unusable; the message says which and how to fix it."""


_NUMERIC = {"churn_horizon_days": int, "clv_horizon_days": int, "dbt_threads": int, "annual_discount_rate": float,
            "churn_retrain_days": int, "churn_min_customers": int, "churn_stacked_cutoffs": int,
            "max_bad_row_share": float, "row_count_band": float, "min_value_gini": float, "min_churn_auc": float,
            "serving_versions": int, "max_drift_psi": float}


def env_values() -> dict:
    """The ``CRM_*`` environment variables that are set, as typed field values."""
    values: dict = {}
    for name, env in ENV_VARS.items():
        raw = os.environ.get(env, "").strip()
        if not raw:
            continue
        try:
            values[name] = _NUMERIC.get(name, str)(raw)
        except ValueError as exc:
            raise SettingsError(f"{env}={raw!r} is not a number") from exc
    return values


def _default(name: str, fallback):
    """Field default: the environment at definition-load time, else ``fallback``."""
    try:
        return env_values().get(name, fallback)
    except SettingsError:
        return fallback  # reported with a clear message by from_env() when the CLI starts


class PipelineSettings(dg.ConfigurableResource):
    """Parameters of one nightly run (see the data contract's 'The run's parameters').

    Every field has a default, so Dagster run config may override any subset of them.
    """

    source_dir: str = Field(
        default=_default("source_dir", str(data_dir() / "sample")),
        description="Folder with the source files (customers, orders, ...).",
    )
    as_of_date: str = Field(
        default=_default("as_of_date", ""),
        description="YYYY-MM-DD. The run sees data up to the end of this date. Empty: the latest order "
        "date in the source, but never later than today.",
    )
    warehouse_path: str = Field(
        default=_default("warehouse_path", str(data_dir() / "warehouse.duckdb")),
        description="DuckDB file the pipeline builds in.",
    )
    serving_path: str = Field(
        default=_default("serving_path", ""),
        description="DuckDB file that BI tools and analysts read. Empty: serving.duckdb beside the warehouse.",
    )
    churn_horizon_days: int = Field(default=_default("churn_horizon_days", 90), description="Churn window in days.")
    clv_horizon_days: int = Field(default=_default("clv_horizon_days", 365), description="CLV window in days.")
    annual_discount_rate: float = Field(
        default=_default("annual_discount_rate", 0.10), description="Annual discount rate for CLV."
    )
    reporting_currency: str = Field(default=_default("reporting_currency", "EUR"), description="Currency of amounts.")
    dbt_threads: int = Field(
        default=_default("dbt_threads", 1), description="dbt threads (DuckDB has one writer; 1 is right)."
    )
    max_bad_row_share: float = Field(
        default=_default("max_bad_row_share", 0.01),
        description="Share of an entity's rows that may break the contract (quarantined) before the run stops.",
    )
    row_count_band: float = Field(
        default=_default("row_count_band", 5.0),
        description="Stop when an entity has more than this many times (or less than 1/this) the rows of the "
        "last published run.",
    )
    min_value_gini: float = Field(
        default=_default("min_value_gini", 0.2), description="Floor for the value champion's back-test normalised Gini."
    )
    min_churn_auc: float = Field(
        default=_default("min_churn_auc", 0.6), description="Floor for the churn champion's back-test ROC AUC."
    )
    min_buyer_share: float = Field(
        default=_default("min_buyer_share", 0.01),
        description="Stop when fewer than this share of known customers have a completed purchase in view "
        "(orders no longer joining their customers).",
    )
    duckdb_memory_limit: str = Field(
        default=_default("duckdb_memory_limit", "3GB"),
        description="DuckDB memory limit for the pipeline's connections and dbt (the rest is left to pandas and "
        "scikit-learn in the same process).",
    )
    max_drift_psi: float = Field(
        default=_default("max_drift_psi", 0.5),
        description="Stop when churn_probability, clv or potential_score drift further than this population "
        "stability index from the last publication.",
    )
    potential_weights: str = Field(
        default=_default("potential_weights", format_name_numbers(DEFAULT_WEIGHTS)),
        description="Weights of the potential score's parts (value, retention, headroom, reach); see ml/potential.py.",
    )
    tier_bounds: str = Field(
        default=_default("tier_bounds", format_name_numbers(DEFAULT_TIER_BOUNDS)),
        description="Priority tiers by potential-rank percentile: each tier's upper bound (the last must be 1.0).",
    )
    action_rules_file: str = Field(
        default=_default("action_rules_file", ""),
        description="CSV rule table for next best actions (empty: the bundled ml/next_best_action_rules.csv).",
    )
    response_window_days: int = Field(
        default=_default("response_window_days", 30),
        description="campaign_effectiveness counts revenue within this many days after a campaign response.",
    )
    erase_file: str = Field(
        default=_default("erase_file", ""),
        description="File of customer ids to erase (one per line); recorded and applied on this and every later run.",
    )
    serving_versions: int = Field(
        default=_default("serving_versions", 3), description="Previous publications kept for rollback."
    )
    model_registry_dir: str = Field(
        default=_default("model_registry_dir", str(PROJECT_ROOT / "models")),
        description="Model registry folder (versioned artifacts and model cards; champions are kept per warehouse).",
    )
    churn_retrain_days: int = Field(
        default=_default("churn_retrain_days", 7),
        description="Retrain the churn model when the champion is this many days older than the as-of date.",
    )
    churn_min_customers: int = Field(
        default=_default("churn_min_customers", 500),
        description="Fewer customers in the churn training window: fall back to the BG/NBD probability.",
    )
    churn_stacked_cutoffs: int = Field(
        default=_default("churn_stacked_cutoffs", 2), description="Back-dated cutoffs stacked for churn training."
    )

    @field_validator("as_of_date")
    @classmethod
    def _valid_date(cls, value: str) -> str:
        value = (value or "").strip()
        if value:
            try:
                date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"as_of_date must be YYYY-MM-DD, got {value!r}") from exc
        return value

    @field_validator("churn_horizon_days", "clv_horizon_days")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"horizons must be at least 1 day, got {value}")
        return value

    @classmethod
    def from_env(cls, **overrides) -> "PipelineSettings":
        """Settings from ``overrides``, then ``CRM_*`` environment variables (read now), then defaults."""
        values = env_values()
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise SettingsError(str(exc)) from exc

    @property
    def serving_file(self) -> Path:
        """The serving database: ``serving_path``, or ``serving.duckdb`` beside the warehouse."""
        return Path(self.serving_path) if self.serving_path else Path(self.warehouse_path).with_name("serving.duckdb")

    @property
    def lineage(self) -> Lineage:
        """The warehouse and source a trained model belongs to (its champion is reused only there)."""
        return Lineage(warehouse=str(Path(self.warehouse_path).resolve()), source=str(Path(self.source_dir).resolve()))

    @property
    def gx_dir(self) -> Path:
        """Great Expectations file context (suites, results, Data Docs): ``gx/`` beside the warehouse."""
        return Path(self.warehouse_path).resolve().parent / "gx"

    @property
    def pseudonym_key_file(self) -> Path:
        return Path(self.warehouse_path).resolve().parent / ".pseudonym.key"

    def scoring_rules(self):
        """Potential weights, tier bounds and the action rule table, parsed (clear errors when malformed)."""
        from ml.actions import load_rules
        from ml.potential import parse_weights
        from ml.ranking import parse_tier_bounds
        from ml.scoring import ScoringRules

        return ScoringRules(weights=parse_weights(self.potential_weights),
                            tier_bounds=parse_tier_bounds(self.tier_bounds),
                            action_rules=load_rules(self.action_rules_file or None))

    @property
    def reports_dir(self) -> Path:
        """Per-run plots and reports: ``reports/`` beside the warehouse."""
        return Path(self.warehouse_path).resolve().parent / "reports"

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection to the warehouse, closed even when the body raises.

        DuckDB allows one writing process per file and dbt runs as a subprocess, so no connection may
        outlive the step that opened it (dagster-duckdb's resource leaks its connection on errors).
        """
        Path(self.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.warehouse_path, config={"memory_limit": self.duckdb_memory_limit})
        try:
            yield con
        finally:
            con.close()

    def resolve_as_of(self, con: duckdb.DuckDBPyConnection) -> date:
        """The run's as-of date: the configured one, else the latest order date (capped at today)."""
        if self.as_of_date:
            return date.fromisoformat(self.as_of_date)
        latest = con.execute(
            "select max(cast(try_cast(trim(ordered_at) as timestamp) as date)) from raw.orders"
        ).fetchall()[0][0]
        today = date.today()
        return min(latest, today) if latest else today

    def resolve_windows(self, con: duckdb.DuckDBPyConnection) -> Windows:
        """The run's as-of date and every back-dated cutoff, sized to the order history in view."""
        as_of = self.resolve_as_of(con)
        first = con.execute(
            "select min(d) from (select cast(try_cast(trim(ordered_at) as timestamp) as date) as d from raw.orders) "
            "where d <= ?", [as_of]).fetchall()[0][0]
        return plan_windows(as_of, first, churn_horizon_days=self.churn_horizon_days,
                            clv_horizon_days=self.clv_horizon_days, stacked=self.churn_stacked_cutoffs)

    def dbt_vars(self, windows: Windows, run_id: str) -> dict:
        return {
            "as_of_date": windows.as_of.isoformat(),
            "feature_cutoffs": [d.isoformat() for d in windows.cutoffs()],
            "value_window_days": windows.value_window_days,
            "run_id": run_id,
            "warehouse_path": str(Path(self.warehouse_path).resolve()),
            "churn_horizon_days": self.churn_horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "reporting_currency": self.reporting_currency,
            "dbt_threads": self.dbt_threads,
            "max_bad_row_share": self.max_bad_row_share,
            "min_buyer_share": self.min_buyer_share,
            "response_window_days": self.response_window_days,
            "duckdb_memory_limit": self.duckdb_memory_limit,
        }
