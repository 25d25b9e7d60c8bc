"""Customer value models: back-test, champion choice, predictions, model_performance rows and plots."""

import dagster as dg
import pandas as pd

from ml import plots
from ml.cutoff_data import CutoffData
from ml.value_models import BTYD_MODEL, LEARNED_MODEL, NAIVE_MODEL, run_value_models
from orchestration.memory import release_memory
from orchestration.publication import ensure_ops_tables
from orchestration.settings import PipelineSettings

CUSTOMER_VALUE = dg.AssetKey(["scores", "customer_value"])
FEATURES_HISTORY = dg.AssetKey(["marts", "customer_features_history"])
OUTCOMES = dg.AssetKey(["marts", "customer_outcomes"])


def _metrics_markdown(performance: list[dict]) -> str:
    if not performance:
        return "no back-test"
    table = pd.DataFrame(performance).pivot_table(index="model_name", columns="metric", values="value")
    cols = [c for c in ("normalised_gini", "spearman", "total_ratio", "mae", "n_customers") if c in table]
    return table[cols].round(4).to_markdown() if hasattr(table, "to_markdown") and _has_tabulate() else table[cols].round(4).to_string()


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


@dg.asset(
    key=CUSTOMER_VALUE,
    deps=[FEATURES_HISTORY, OUTCOMES],
    group_name="models",
    kinds={"python", "scikitlearn", "duckdb"},
    description="p_alive, expected purchases and spend, P(no purchase in the churn horizon) and CLV per customer "
    "from the back-tested champion of BG/NBD + Gamma-Gamma and a HistGradientBoosting (Poisson) challenger.",
)
def customer_value(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    release_memory()
    with settings.warehouse() as con:
        as_of = settings.resolve_as_of(con)
        cutoffs = settings.cutoffs(as_of)
        data = CutoffData(con)
        context.log.info(f"value models: {data.count(as_of):,} customers at {as_of}")
        result = run_value_models(
            data, as_of=as_of, cutoffs=cutoffs,
            horizon_days=settings.clv_horizon_days, churn_horizon_days=settings.churn_horizon_days,
            annual_discount_rate=settings.annual_discount_rate, run_id=context.run_id,
        )
        median_t = float(data.features(as_of, ["btyd_t_days"]).btyd_t_days.median())
    for note in result.notes:
        context.log.info(f"value models: {note}")
    context.log.info(f"value models: champion {result.champion}")

    report_dir = settings.reports_dir / context.run_id
    plot_paths = {}
    production = result.fits["production"]
    plot_paths["frequency_recency_expected"], plot_paths["frequency_recency_p_alive"] = plots.frequency_recency_matrices(
        production.bg, settings.clv_horizon_days, median_t,
        report_dir / "frequency_recency_expected.png", report_dir / "frequency_recency_p_alive.png",
    )
    if result.backtest is not None and BTYD_MODEL in result.backtest:
        plot_paths["calibration_by_frequency"] = plots.calibration_by_frequency(
            result.backtest, report_dir / "calibration_by_frequency.png")
        models = [m for m in (BTYD_MODEL, LEARNED_MODEL, NAIVE_MODEL) if m in result.backtest]
        plot_paths["spend_by_decile"] = plots.spend_by_decile(
            result.backtest, models, result.champion, report_dir / "spend_by_decile.png")

    with settings.warehouse() as con:
        con.execute("create schema if not exists scores")
        con.register("value_df", result.predictions)
        con.execute("create or replace table scores.customer_value as select * from value_df")
        con.unregister("value_df")
        ensure_ops_tables(con)
        con.execute("delete from ops.model_performance where run_id = ?", [context.run_id])
        if result.performance:
            con.register("perf_df", pd.DataFrame(result.performance))
            con.execute("insert into ops.model_performance by name select * from perf_df")
            con.unregister("perf_df")

    fits = {name: {"bgnbd": fit.bg.as_dict(), "gamma_gamma": fit.gg.as_dict()} for name, fit in result.fits.items()}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(result.predictions),
            "champion": result.champion,
            "clv_model": str(result.predictions.clv_model.iloc[0]),
            "fitted_parameters": dg.MetadataValue.json(fits),
            "backtest": dg.MetadataValue.md(_metrics_markdown(result.performance)),
            "notes": dg.MetadataValue.json(result.notes),
            **{f"plot_{k}": dg.MetadataValue.path(str(v)) for k, v in plot_paths.items()},
        }
    )
