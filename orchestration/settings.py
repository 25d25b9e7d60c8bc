"""The run's parameters, one resource that every asset reads.

Each field can be set three ways, highest priority first: Dagster run config
(``resources: {settings: {config: {...}}}``), the ``crm-potential run`` flags (which write run config),
and environment variables (``CRM_*``, read when the definitions load). Defaults follow the data contract.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack, contextmanager
from dataclasses import fields
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field, PrivateAttr, field_validator

from ml.name_numbers import format_name_numbers
from ml.potential import DEFAULT_WEIGHTS
from ml.ranking import DEFAULT_TIER_BOUNDS
from ml.registry import Lineage
from ml.windows import Windows, plan_windows
from orchestration.file_modes import private_files
from orchestration.publication import DEFAULT_SERVING_STORAGE_VERSION
from orchestration.score_history import DEFAULT_HISTORY_DAYS, DEFAULT_HISTORY_MONTHS
from orchestration.postgres_url import has_password, is_database_url
from orchestration.serving_postgres import PostgresTarget, ServingTargetError
from orchestration.source_database import DatabaseSource
from orchestration.warehouse import DuckDBWarehouse, Warehouse

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# field name -> environment variable
ENV_VARS = {
    "source_dir": "CRM_SOURCE_DIR",
    "as_of_date": "CRM_AS_OF_DATE",
    "warehouse_path": "CRM_WAREHOUSE",
    "engine": "CRM_ENGINE",
    "spark_dir": "CRM_SPARK_DIR",
    "spark_master": "CRM_SPARK_MASTER",
    "spark_driver_memory": "CRM_SPARK_DRIVER_MEMORY",
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
    "serving_storage_version": "CRM_SERVING_STORAGE_VERSION",
    "export_parquet_dir": "CRM_EXPORT_PARQUET",
    "duckdb_memory_limit": "CRM_DUCKDB_MEMORY_LIMIT",
    "models_duckdb_memory_limit": "CRM_MODELS_DUCKDB_MEMORY_LIMIT",
    "scoring_batch_rows": "CRM_SCORING_BATCH_ROWS",
    "max_drift_psi": "CRM_MAX_DRIFT_PSI",
    "erase_file": "CRM_ERASE_FILE",
    "potential_weights": "CRM_POTENTIAL_WEIGHTS",
    "tier_bounds": "CRM_TIER_BOUNDS",
    "action_rules_file": "CRM_ACTION_RULES",
    "response_window_days": "CRM_RESPONSE_WINDOW_DAYS",
    "timezone": "CRM_TIMEZONE",
    "earliest_date": "CRM_EARLIEST_DATE",
    "created_at_tolerance_days": "CRM_CREATED_AT_TOLERANCE_DAYS",
    "amount_outlier_factor": "CRM_AMOUNT_OUTLIER_FACTOR",
    "max_outlier_share": "CRM_MAX_OUTLIER_SHARE",
    "max_source_age_days": "CRM_MAX_SOURCE_AGE_DAYS",
    "block_source_age_days": "CRM_BLOCK_SOURCE_AGE_DAYS",
    "history_days": "CRM_HISTORY_DAYS",
    "history_months": "CRM_HISTORY_MONTHS",
    "partitions_start": "CRM_PARTITIONS_START",
    "alert_webhook": "CRM_ALERT_WEBHOOK",
    "alert_email_to": "CRM_ALERT_EMAIL_TO",
    "alert_email_from": "CRM_ALERT_EMAIL_FROM",
    "smtp_host": "CRM_SMTP_HOST",
    "smtp_port": "CRM_SMTP_PORT",
    "smtp_user": "CRM_SMTP_USER",
    "smtp_security": "CRM_SMTP_SECURITY",
}

PARTITION_TAG = "dagster/partition"  # the tag Dagster gives a partitioned run: its partition key
# A run filed under a night whose date is not its as-of date (orchestration/partitions.py, night_of_run): its as-of
# date comes from its settings or, when they give none, from the data (the latest order that keeps the contract).
AS_OF_FROM_TAG = "crm/as_of_from"

# settings that may hold a secret (a webhook URL carries its token): never stored in pipeline_runs.parameters
UNRECORDED = frozenset({"alert_webhook", "smtp_user"})


def data_dir() -> Path:
    """Where generated data, the warehouse and the serving database live by default."""
    return Path(os.environ.get("CRM_DATA_DIR", PROJECT_ROOT / "data"))


# the dates of the orders that keep the contract (in the run's time zone), from the contract step
# (dbt_contract), the first dbt step of a run
CHECKED_ORDER_DATES = "select cast(ordered_at as date) as d from staging.stg_orders_checked where reject_reason is null"


# one row per run: the windows its contract step resolved (``PipelineSettings.record_windows``)
RUN_WINDOWS_DDL = "create table if not exists ops.run_windows (run_id string, windows string, resolved_at timestamp)"


def windows_to_json(windows: Windows) -> str:
    return json.dumps({f.name: getattr(windows, f.name) for f in fields(Windows)}, default=date.isoformat,
                      sort_keys=True)


def windows_from_json(text: str) -> Windows:
    """The inverse of ``windows_to_json`` (dates back from ISO strings, by the field's declared type)."""
    values = json.loads(text)
    for f in fields(Windows):
        value = values[f.name]
        if f.type in ("date", "date | None"):
            values[f.name] = date.fromisoformat(value) if value else None
        elif f.type == "list[date]":
            values[f.name] = [date.fromisoformat(v) for v in value]
    return Windows(**values)


class SettingsError(ValueError):
    """A run parameter is unusable; the message says which and how to fix it."""


_NUMERIC = {"churn_horizon_days": int, "clv_horizon_days": int, "dbt_threads": int, "annual_discount_rate": float,
            "churn_retrain_days": int, "churn_min_customers": int, "churn_stacked_cutoffs": int,
            "max_bad_row_share": float, "row_count_band": float, "min_value_gini": float, "min_churn_auc": float,
            "serving_versions": int, "max_drift_psi": float, "created_at_tolerance_days": int,
            "amount_outlier_factor": float, "max_outlier_share": float, "max_source_age_days": int,
            "block_source_age_days": int, "history_days": int, "history_months": int,
            "smtp_port": int, "scoring_batch_rows": int, "min_buyer_share": float, "response_window_days": int}


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


CONFIG_ENV = "CRM_CONFIG"
CONFIG_FILE = "crm-potential.toml"  # read from the working directory when CRM_CONFIG / --config name none


def config_path(explicit: str | None = None) -> Path | None:
    """The config file of this run: ``--config``, else ``CRM_CONFIG``, else ``./crm-potential.toml`` if present."""
    named = explicit or os.environ.get(CONFIG_ENV, "").strip()
    if named:
        if not Path(named).is_file():
            raise SettingsError(f"config file {named} does not exist ({'--config' if explicit else CONFIG_ENV})")
        return Path(named)
    return Path(CONFIG_FILE) if Path(CONFIG_FILE).is_file() else None


_TOML_KINDS = {int: ("a whole number", (int,)), float: ("a number", (int, float)), str: ("a string", (str,)),
               bool: ("true or false", (bool,))}


def file_values(path: Path | None) -> dict:
    """The settings of a TOML config file (keys are the setting names of ``example_config()``), checked: an
    unknown key or a value of the wrong kind is a ``SettingsError`` naming the key and what it accepts."""
    if path is None:
        return {}
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc}") from None
    fields = PipelineSettings.model_fields
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise SettingsError(f"config file {path}: unknown setting {key!r}; the settings are "
                                f"{', '.join(sorted(fields))}")
        kind = fields[key].annotation
        words, accepted = _TOML_KINDS.get(kind, ("a string", (str,)))
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepted):
            raise SettingsError(f"config file {path}: {key} must be {words}, got {value!r}")
        values[key] = value
    return values


def example_config() -> str:
    """Every setting with its description and default, as a commented TOML file (crm-potential.example.toml)."""
    lines = ["# crm-potential settings. Copy to crm-potential.toml (read from the working directory) or name the file",
             "# with --config FILE / CRM_CONFIG. Precedence: command-line flag > CRM_* environment variable > this",
             "# file > default. Uncomment what you change; an unknown key or a value of the wrong kind stops the run.",
             ""]
    for name, info in PipelineSettings.model_fields.items():
        fallback = _FALLBACKS.get(name, info.default)
        if isinstance(fallback, bool):
            value = str(fallback).lower()
        elif isinstance(fallback, str):  # project paths as the checkout has them: relative to its root
            value = '"' + fallback.replace(str(PROJECT_ROOT) + os.sep, "") + '"'
        else:
            value = fallback
        env = ENV_VARS.get(name)
        words = (info.description or "") + (f" Environment: {env}." if env else "")
        lines += [f"# {chunk}" for chunk in _wrap(words)] + [f"# {name} = {value}", ""]
    return "\n".join(lines)


def _wrap(text: str, width: int = 112) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


_FALLBACKS: dict = {}  # field -> its default when no environment variable is set


def _default(name: str, fallback):
    """Field default: the environment at definition-load time, else ``fallback``."""
    _FALLBACKS[name] = fallback
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
        description="Folder with the source files (customers, orders, ...), or a PostgreSQL URL "
        "postgresql://user@host:5432/db?schema=crm whose tables of those names are read incrementally (password from "
        "CRM_SOURCE_PASSWORD, PGPASSWORD or ~/.pgpass, never in the URL).",
    )
    full_refresh: bool = Field(
        default=False,
        description="A database source: read every table in full this run instead of the rows changed since the "
        "last published run (--full-refresh).",
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
    engine: str = Field(
        default=_default("engine", "duckdb"),
        description="Where the warehouse's tables live: duckdb (the file CRM_WAREHOUSE) or spark (a Spark "
        "catalog: dbt, the models, the checks and the publication run there; ingest lands the files in "
        "CRM_WAREHOUSE first; readers query the views serving.*).",
    )
    spark_dir: str = Field(
        default=_default("spark_dir", ""),
        description="The spark engine's session: its catalog (metastore) and tables (empty: spark/ beside "
        "the warehouse).",
    )
    spark_master: str = Field(
        default=_default("spark_master", ""),
        description="The spark engine's master URL: empty for a local session on every core of this machine "
        "(local[N]), or spark://host:7077, yarn, k8s://... (the pipeline's process is then the driver; dbt runs "
        "in it, on the same session).",
    )
    spark_driver_memory: str = Field(
        default=_default("spark_driver_memory", "2g"),
        description="The spark engine's driver memory (a JVM size such as 2g or 8g; with a local master it is all "
        "the memory Spark has).",
    )
    serving_path: str = Field(
        default=_default("serving_path", ""),
        description="Where BI tools and analysts read the publication: a DuckDB file (empty: serving.duckdb beside "
        "the warehouse), or a PostgreSQL URL postgresql://user@host:5432/db?schema=crm_serving[&reader_role=role] "
        "(password from CRM_SERVING_PASSWORD, PGPASSWORD or ~/.pgpass, never in the URL).",
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
        description="DuckDB memory limit for dbt and the SQL steps (ingest, checks, publish). At about ten "
        "million customers the contract step needs more: about half the machine's memory.",
    )
    models_duckdb_memory_limit: str = Field(
        default=_default("models_duckdb_memory_limit", "2GB"),
        description="DuckDB memory limit in the model and scoring steps, whose pandas frames share the process "
        "with DuckDB's cache (DuckDB keeps what it read cached up to its limit, so a large limit here leaves "
        "the models less room).",
    )
    scoring_batch_rows: int = Field(
        default=_default("scoring_batch_rows", 200_000), gt=0,
        description="Customers one call of the scoring step's per-customer passes takes (DuckDB: a batch through "
        "the process; Spark: the Arrow batches of its executors). What compares a customer with everyone "
        "(percentiles, ranks, tiers, clusters, means) is SQL over every customer, so the scores do not depend on "
        "it; smaller batches use less memory.",
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
    export_parquet_dir: str = Field(
        default=_default("export_parquet_dir", ""),
        description="Folder for a Parquet copy of every release, for tools that read files (runs/<run_id>/<table>"
        ".parquet with manifest.json; `latest` symlink and latest.json name the newest). Empty: no export.",
    )
    serving_storage_version: str = Field(
        default=_default("serving_storage_version", DEFAULT_SERVING_STORAGE_VERSION),
        description="DuckDB storage format of the serving file, as a DuckDB release (v1.0.0 ... the running "
        "DuckDB's own). The default, v1.0.0, is the oldest that holds everything we publish; DuckDB 0.10 and "
        "every 1.x client (the DuckDB drivers BI tools ship) open it. The warehouse keeps the current format.",
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
    timezone: str = Field(
        default=_default("timezone", "UTC"),
        description="IANA time zone of the run (e.g. Europe/Berlin): timestamps with a UTC offset or Z are "
        "converted to it before a date is taken; timestamps without one are read in it; 'today' is its today.",
    )
    earliest_date: str = Field(
        default=_default("earliest_date", "1990-01-01"),
        description="YYYY-MM-DD. Rows dated before it (orders, interactions, customers created, campaigns) are "
        "implausible and quarantined.",
    )
    created_at_tolerance_days: int = Field(
        default=_default("created_at_tolerance_days", 1),
        description="An order or interaction may be dated this many days before its customer's created_at (the "
        "shop may record a first order before the CRM makes the account: guest checkout, two systems' clocks); "
        "earlier ones are quarantined. Raise it when created_at is a migration date rather than the first contact.",
    )
    amount_outlier_factor: float = Field(
        default=_default("amount_outlier_factor", 20.0),
        description="Order amounts above this many times the 99.9th percentile of the valid amounts are "
        "implausible and quarantined (the percentile ignores amounts above 100 x this x the median).",
    )
    max_outlier_share: float = Field(
        default=_default("max_outlier_share", 0.001),
        description="Stop when more than this share of the orders have an amount beyond the outlier bound "
        "(clean data has at most 0.1 % above its 99.9th percentile: more is a broken export).",
    )
    max_source_age_days: int = Field(
        default=_default("max_source_age_days", 7),
        description="Warn when the newest order that keeps the contract is more than this many days older than the "
        "run's as-of date (or today, when no as-of date is given): the source may not have moved. 0: never warn.",
    )
    block_source_age_days: int = Field(
        default=_default("block_source_age_days", 0),
        description="Stop before publishing when the newest order is more than this many days older than the run's "
        "as-of date (or today). 0: never stop for it (the bundled sample is months old); set it in production.",
    )
    history_days: int = Field(
        default=_default("history_days", DEFAULT_HISTORY_DAYS),
        description="customer_scores_history and segment_history keep every night of this many days before the "
        "newest published as-of date. Each release holds one row per customer per night kept (about 0.7 s per "
        "million rows to copy).",
    )
    history_months: int = Field(
        default=_default("history_months", DEFAULT_HISTORY_MONTHS),
        description="Before those days, the history keeps each month's last published night of this many months "
        "before the newest night's month (month over month at a twelfth of the rows of every night).",
    )
    partitions_start: str = Field(
        default=_default("partitions_start", "2024-01-01"),
        description="YYYY-MM-DD. First night of the Dagster UI's daily partitions (one per as-of date; backfills "
        "choose from them). Read when the definitions load.",
    )
    alert_webhook: str = Field(
        default=_default("alert_webhook", ""),
        description="URL that a failed night is posted to as JSON (run id, failed step, first error line; Slack "
        "and Teams incoming webhooks accept it). Sent by the Dagster daemon's run-failure sensor. Empty: none.",
    )
    alert_email_to: str = Field(
        default=_default("alert_email_to", ""),
        description="Comma-separated addresses e-mailed when a night fails (needs smtp_host). Empty: no e-mail.",
    )
    alert_email_from: str = Field(
        default=_default("alert_email_from", "crm-potential@localhost"), description="Sender of the failure e-mail.",
    )
    smtp_host: str = Field(default=_default("smtp_host", ""), description="SMTP server for the failure e-mail.")
    smtp_port: int = Field(default=_default("smtp_port", 587), description="SMTP server port.")
    smtp_user: str = Field(
        default=_default("smtp_user", ""),
        description="SMTP login (the password from CRM_SMTP_PASSWORD, never in a file). Empty: no login.",
    )
    smtp_security: str = Field(
        default=_default("smtp_security", "starttls"),
        description="starttls, ssl or none (none only for a relay on the same host).",
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

    @field_validator("warehouse_path")
    @classmethod
    def _warehouse_name_without_quotes(cls, value: str) -> str:
        # DuckDB names the database after the file, and dbt-duckdb pastes that name into SQL unescaped
        name = Path(value).stem
        if "'" in name or '"' in name:
            raise ValueError(f"the warehouse file name {Path(value).name!r} may not contain a quote (dbt uses it as "
                             "the database name); rename the file (a quote in its folder is fine)")
        return value

    @field_validator("earliest_date", "partitions_start")
    @classmethod
    def _valid_fixed_date(cls, value: str, info) -> str:
        value = (value or "").strip() or _FALLBACKS[info.field_name]
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{info.field_name} ({ENV_VARS[info.field_name]}) must be YYYY-MM-DD, got {value!r}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        value = (value or "").strip() or "UTC"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone (CRM_TIMEZONE) must be an IANA time zone name such as UTC or "
                             f"Europe/Berlin, got {value!r}") from exc
        return value

    @field_validator("serving_path", "source_dir")
    @classmethod
    def _database_url(cls, value: str, info) -> str:
        value = (value or "").strip()
        if is_database_url(value):
            what, env, parse = (("serving", "CRM_SERVING_PASSWORD", PostgresTarget.parse) if info.field_name == "serving_path"
                                else ("source", "CRM_SOURCE_PASSWORD", DatabaseSource.parse))
            if has_password(value):
                raise ValueError(f"the {what} URL holds a password: it would be recorded in pipeline_runs and the run "
                                 f"history. Remove it from the URL and set {env}, PGPASSWORD or ~/.pgpass")
            try:
                parse(value)
            except ServingTargetError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("serving_storage_version")
    @classmethod
    def _storage_version(cls, value: str) -> str:
        value = (value or "").strip() or DEFAULT_SERVING_STORAGE_VERSION
        if not re.fullmatch(r"v\d+\.\d+\.\d+|latest", value):
            raise ValueError(f"serving_storage_version (CRM_SERVING_STORAGE_VERSION) must be a DuckDB release such "
                             f"as v1.0.0, or latest, got {value!r}")
        return value

    @field_validator("created_at_tolerance_days")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"created_at_tolerance_days (CRM_CREATED_AT_TOLERANCE_DAYS) must be 0 or more, got {value}")
        return value

    @field_validator("amount_outlier_factor")
    @classmethod
    def _factor_above_one(cls, value: float) -> float:
        if not value > 1:
            raise ValueError(f"amount_outlier_factor (CRM_AMOUNT_OUTLIER_FACTOR) must be more than 1, got {value}")
        return value

    @field_validator("max_outlier_share")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"max_outlier_share (CRM_MAX_OUTLIER_SHARE) must be between 0 and 1, got {value}")
        return value

    @field_validator("max_source_age_days", "block_source_age_days", "history_days", "history_months")
    @classmethod
    def _days_not_negative(cls, value: int, info) -> int:
        if value < 0:
            unit = "months" if info.field_name.endswith("months") else "days"
            raise ValueError(f"{info.field_name} ({ENV_VARS[info.field_name]}) must be 0 or more {unit}, got {value}")
        return value

    @field_validator("engine")
    @classmethod
    def _valid_engine(cls, value: str) -> str:
        if value not in ("duckdb", "spark"):
            raise ValueError(f"engine (CRM_ENGINE) must be duckdb or spark, got {value!r}")
        return value

    @field_validator("spark_driver_memory")
    @classmethod
    def _valid_spark_memory(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]*[kmgt]", value.strip().lower()):
            raise ValueError(f"spark_driver_memory (CRM_SPARK_DRIVER_MEMORY) must be a JVM size such as 2g or "
                             f"8192m, got {value!r}")
        return value.strip().lower()

    @field_validator("smtp_security")
    @classmethod
    def _valid_smtp_security(cls, value: str) -> str:
        value = (value or "").strip().lower() or "starttls"
        if value not in ("starttls", "ssl", "none"):
            raise ValueError(f"smtp_security (CRM_SMTP_SECURITY) must be starttls, ssl or none, got {value!r}")
        return value

    _partition_date: str = PrivateAttr(default="")
    _lock: ExitStack | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A partitioned run (a night launched from the UI, a backfill, the schedule) is the night of its partition
        key: that date is its as-of date. A configured as-of date must agree with it.

        The run holds the warehouse's run lock while it executes (``run_lock``; the CLI takes it before the run
        starts, so in its process this is a no-op): a night the daemon launches waits for a CLI run or a
        rollback on the same warehouse to end, and the other way round."""
        run = context.dagster_run
        key = (run.tags.get(PARTITION_TAG) or "") if run is not None and AS_OF_FROM_TAG not in run.tags else ""
        if key and self.as_of_date and self.as_of_date != key:
            raise SettingsError(f"the run is the night of {key} (its partition) but as_of_date is {self.as_of_date}; "
                                "leave as_of_date empty for partitioned runs")
        self._partition_date = key
        if run is not None:
            from orchestration.run_lock import describe_holder, run_lock

            def waiting(holder: dict) -> None:
                context.log.warning(f"{describe_holder(self.warehouse_path, holder)}; waiting for it to end")

            self._lock = ExitStack()
            self._lock.enter_context(run_lock(self.warehouse_path, run.run_id, wait=0, on_wait=waiting))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def run_as_of_date(self) -> str:
        """The as-of date this run was given (the setting, else its partition's date); empty when the data's own
        latest order date decides (``resolve_as_of``)."""
        return self.as_of_date or self._partition_date

    def recorded_parameters(self) -> dict:
        """The settings as ``pipeline_runs.parameters`` stores them: without those that may hold a secret."""
        return {k: v for k, v in self.model_dump().items() if k not in UNRECORDED}

    @field_validator("churn_horizon_days", "clv_horizon_days")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"horizons must be at least 1 day, got {value}")
        return value

    @classmethod
    def from_env(cls, config: str | None = None, **overrides) -> "PipelineSettings":
        """Settings from ``overrides`` (flags), then ``CRM_*`` environment variables (read now), then the config
        file (``config_path``), then defaults. The field defaults hold the environment of the moment this module
        was imported (for the Dagster UI's definitions); a CLI run reads the environment as it is now."""
        values = {**_FALLBACKS, **file_values(config_path(config)), **env_values()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise SettingsError(str(exc)) from exc

    @property
    def serving_file(self) -> Path:
        """The serving database: ``serving_path``, or ``serving.duckdb`` beside the warehouse (also when the
        serving target is a PostgreSQL URL: the night's release is written there first, then published)."""
        if self.serving_path and not is_database_url(self.serving_path):
            return Path(self.serving_path)
        return Path(self.warehouse_path).with_name("serving.duckdb")

    @property
    def source_database(self) -> DatabaseSource | None:
        """The database source when ``source_dir`` is a PostgreSQL URL, else None (a folder of files)."""
        return DatabaseSource.parse(self.source_dir) if is_database_url(self.source_dir) else None

    @property
    def source_display(self) -> str:
        """The source in words: the folder's absolute path, or the URL without a password."""
        source = self.source_database
        return source.display if source else str(Path(self.source_dir).resolve())

    @property
    def serving_target(self) -> PostgresTarget | None:
        """The PostgreSQL serving target when ``serving_path`` is a database URL, else None."""
        return PostgresTarget.parse(self.serving_path) if is_database_url(self.serving_path) else None

    @property
    def serving_display(self) -> str:
        """Where readers find the publication, in words (a URL without its password)."""
        if self.engine == "spark":
            return f"the views serving.* of the Spark catalog in {self.spark_folder}"
        target = self.serving_target
        return f"{target.display} (release file {self.serving_file})" if target else str(self.serving_file)

    def spark_session(self):
        """The process's Spark session for the spark engine (started on first use; ``spark_*`` settings)."""
        from orchestration.spark_session import local_session

        return local_session(self.spark_folder, driver_memory=self.spark_driver_memory, master=self.spark_master or None)

    @property
    def spark_folder(self) -> Path:
        """The Spark session's folder (its catalog and tables): ``spark_dir``, by default spark/ beside the warehouse."""
        from orchestration.spark_session import local_path

        return local_path(self.spark_dir) if self.spark_dir else Path(self.warehouse_path).resolve().parent / "spark"

    @property
    def lineage(self) -> Lineage:
        """The warehouse and source a trained model belongs to (its champion is reused only there)."""
        return Lineage(warehouse=str(Path(self.warehouse_path).resolve()), source=self.source_display)

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
    def warehouse(self, *, for_models: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection to the warehouse, closed even when the body raises.

        DuckDB allows one writing process per file and dbt runs as a subprocess, so no connection may
        outlive the step that opened it (dagster-duckdb's resource leaks its connection on errors).
        ``for_models``: the model and scoring steps' connection, with ``models_duckdb_memory_limit``.
        """
        limit = self.models_duckdb_memory_limit if for_models else self.duckdb_memory_limit
        with private_files(self.warehouse_path, self.serving_file, extra_files=(self.pseudonym_key_file,)):
            con = duckdb.connect(self.warehouse_path, config={"memory_limit": limit})
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def open_warehouse(self, *, for_models: bool = False) -> Iterator[Warehouse]:
        """The warehouse of the run's engine (``orchestration/warehouse.py``): on DuckDB a short-lived connection
        (``warehouse``); on Spark the process's session (``orchestration/spark_session.py``), which outlives the
        step (a JVM takes seconds to start)."""
        if self.engine == "spark":
            from orchestration.warehouse_spark import SparkWarehouse

            yield SparkWarehouse(self.spark_session())
            return
        with self.warehouse(for_models=for_models) as con:
            yield DuckDBWarehouse(con)

    def today(self) -> date:
        """Today in the run's time zone."""
        return datetime.now(ZoneInfo(self.timezone)).date()

    def resolve_as_of(self, warehouse: Warehouse) -> date:
        """The run's as-of date: the configured one, else the latest date of an order that keeps the contract
        (capped at today). Never the raw rows: a quarantined order (dated in the future, say) must not move it."""
        if self.run_as_of_date:
            return date.fromisoformat(self.run_as_of_date)
        latest = warehouse.scalar(f"select max(d) from ({CHECKED_ORDER_DATES}) checked")
        today = self.today()
        return min(latest, today) if latest else today

    def resolve_windows(self, warehouse: Warehouse) -> Windows:
        """The run's as-of date and every back-dated cutoff, sized to the history of orders that keep the
        contract (an order dated 1900 is quarantined and does not lengthen it)."""
        as_of = self.resolve_as_of(warehouse)
        first = warehouse.scalar(f"select min(d) from ({CHECKED_ORDER_DATES}) checked where d <= ?", [as_of])
        return self._plan(as_of, first)

    def record_windows(self, warehouse: Warehouse, run_id: str) -> Windows:
        """Resolve the run's windows (``resolve_windows``) and keep them in ``ops.run_windows`` under the run id.

        The contract step does this once per run, right after the rows it checks exist; every later step reads
        them back (``run_windows``) instead of querying the orders again, so the whole run sees one as-of date."""
        windows = self.resolve_windows(warehouse)
        warehouse.execute("create schema if not exists ops")
        warehouse.execute(RUN_WINDOWS_DDL)
        warehouse.replace_rows("ops.run_windows", pa.table({
            "run_id": [run_id], "windows": [windows_to_json(windows)],
            "resolved_at": pa.array([datetime.now(timezone.utc).replace(tzinfo=None)], pa.timestamp("us"))}),
            {"run_id": run_id})
        return windows

    def run_windows(self, warehouse: Warehouse, run_id: str) -> Windows:
        """The windows the run's contract step recorded; resolved and recorded now when that step did not run in
        this run (an asset materialised on its own from the Dagster UI)."""
        warehouse.execute("create schema if not exists ops")
        warehouse.execute(RUN_WINDOWS_DDL)
        found = warehouse.scalar("select windows from ops.run_windows where run_id = ?", [run_id])
        return windows_from_json(found) if found else self.record_windows(warehouse, run_id)

    def provisional_windows(self, warehouse: Warehouse) -> Windows:
        """A guess at the run's windows from the raw orders, for the contract step's dbt vars only.

        The contract models read no window var, so the guess changes nothing they build. It is passed so that
        the contract step and the steps after it usually hand dbt identical vars: dbt re-parses the whole
        project when a var changes (about 4 s), and with equal vars the later steps reuse the contract step's
        parse. When the guess is wrong (bad rows at the edge of the history) the next step just parses again.
        The windows the run uses always come from ``resolve_windows``.
        """
        if self.run_as_of_date:
            as_of = date.fromisoformat(self.run_as_of_date)
        else:
            latest = warehouse.scalar(
                "select max(cast(try_cast(trim(ordered_at) as timestamp) as date)) from raw.orders "
                "where try_cast(trim(ordered_at) as timestamp) between cast(? as date) and cast(? as date)",
                [self.earliest_date, self.today()])
            as_of = latest or self.today()
        first = warehouse.scalar(
            "select min(d) from (select cast(try_cast(trim(ordered_at) as timestamp) as date) as d from raw.orders) o "
            "where d between cast(? as date) and ?", [self.earliest_date, as_of])
        return self._plan(as_of, first)

    def _plan(self, as_of: date, first: date | None) -> Windows:
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
            "timezone": self.timezone,
            "earliest_date": self.earliest_date,
            "created_at_tolerance_days": self.created_at_tolerance_days,
            "amount_outlier_factor": self.amount_outlier_factor,
        }
