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
}


def data_dir() -> Path:
    """Where generated data, the warehouse and the serving database live by default."""
    return Path(os.environ.get("CRM_DATA_DIR", PROJECT_ROOT / "data"))


class SettingsError(ValueError):
    """A run parameter is unusable; the message says which and how to fix it."""


class PipelineSettings(dg.ConfigurableResource):
    """Parameters of one nightly run (see the data contract's 'The run's parameters')."""

    source_dir: str = Field(description="Folder with the source files (customers, orders, ...).")
    as_of_date: str = Field(
        default="",
        description="YYYY-MM-DD. The run sees data up to the end of this date. Empty: the latest order "
        "date in the source, but never later than today.",
    )
    warehouse_path: str = Field(description="DuckDB file the pipeline builds in.")
    serving_path: str = Field(description="DuckDB file that BI tools and analysts read.")
    churn_horizon_days: int = Field(default=90, description="Churn prediction window in days.")
    clv_horizon_days: int = Field(default=365, description="CLV prediction window in days.")
    annual_discount_rate: float = Field(default=0.10, description="Annual discount rate for CLV.")
    reporting_currency: str = Field(default="EUR", description="Currency of order amounts.")
    dbt_threads: int = Field(default=1, description="dbt threads (DuckDB has one writer; 1 is right).")

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
        """Settings from ``CRM_*`` environment variables, then ``overrides``, then defaults."""
        values: dict = {
            "source_dir": str(data_dir() / "sample"),
            "warehouse_path": str(data_dir() / "warehouse.duckdb"),
        }
        for name, env in ENV_VARS.items():
            if os.environ.get(env):
                values[name] = os.environ[env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "serving_path" not in values:
            values["serving_path"] = str(Path(values["warehouse_path"]).with_name("serving.duckdb"))
        field_types = {"churn_horizon_days": int, "clv_horizon_days": int, "dbt_threads": int,
                       "annual_discount_rate": float}
        for name, typ in field_types.items():
            if name in values:
                try:
                    values[name] = typ(values[name])
                except ValueError as exc:
                    raise SettingsError(f"{ENV_VARS[name]}={values[name]!r} is not a number") from exc
        return cls(**values)

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection to the warehouse, closed even when the body raises.

        DuckDB allows one writing process per file and dbt runs as a subprocess, so no connection may
        outlive the step that opened it (dagster-duckdb's resource leaks its connection on errors).
        """
        Path(self.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.warehouse_path)
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
        ).fetchone()[0]
        today = date.today()
        return min(latest, today) if latest else today

    def dbt_vars(self, as_of: date, run_id: str) -> dict:
        return {
            "as_of_date": as_of.isoformat(),
            "run_id": run_id,
            "warehouse_path": str(Path(self.warehouse_path).resolve()),
            "churn_horizon_days": self.churn_horizon_days,
            "clv_horizon_days": self.clv_horizon_days,
            "reporting_currency": self.reporting_currency,
            "dbt_threads": self.dbt_threads,
        }
