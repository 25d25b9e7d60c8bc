"""Customer value models: back-test, champion choice, predictions, model_performance rows and plots.

The model libraries (scikit-learn, SciPy, matplotlib) are imported when the step runs, not when the definitions
load: loading them costs seconds that ``--help``, ``dagster dev`` and the first line of a run need not wait for."""

import dagster as dg
import pandas as pd

from orchestration.memory import release_memory
from orchestration.publication import ensure_model_performance
from orchestration.settings import PipelineSettings

CUSTOMER_VALUE = dg.AssetKey(["scores", "customer_value"])
FEATURES_HISTORY = dg.AssetKey(["marts", "customer_features_history"])
OUTCOMES = dg.AssetKey(["marts", "customer_outcomes"])


def _metrics_markdown(performance: list[dict]) -> str:
    if not performance:
        return "no back-test"
    frame = pd.DataFrame(performance)
    table = frame[frame.task == "clv_spend"].pivot_table(index="model_name", columns="metric", values="value")
    cols = [c for c in ("normalised_gini", "spearman", "total_ratio", "interval_coverage", "mae", "n_customers") if c in table]
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
    description="p_alive, expected purchases and spend with 80 % intervals, P(no purchase in the churn horizon) and "
    "CLV per customer from the back-tested champion of the BTYD family (BG/NBD, MBG/NBD, Pareto/NBD, each with "
    "Gamma-Gamma spend; chosen by held-out Poisson deviance) and a HistGradientBoosting (Poisson) challenger. "
    "Needs 200 customers known one value window (the CLV horizon, shorter with a short history) before the "
    "as-of date for a back-test; without one, the BTYD model with the best likelihood is used.",
)
def customer_value(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from ml import plots
    from ml.cutoff_data import CutoffData
    from ml.registry import Registry
    from ml.value_models import LEARNED_MODEL, NAIVE_MODEL, run_value_models, value_card_markdown

    release_memory()
    with settings.open_warehouse(for_models=True) as warehouse:
        windows = settings.run_windows(warehouse, context.run_id)
        data = CutoffData(warehouse)
        context.log.info(f"value models: {data.count(windows.as_of):,} customers at {windows.as_of}")
        result = run_value_models(data, windows=windows, annual_discount_rate=settings.annual_discount_rate,
                                  run_id=context.run_id)
        median_t = float(warehouse.scalar(
            f"select median(btyd_t_days) from {data.features_table} where as_of_date = ? and n_orders > 0",
            [windows.as_of]) or 0.0)
        total = data.count(windows.as_of)
        release_memory()
        # every customer predicted where the data is: whole interval blocks here, on the executors on Spark
        rows = result.write(warehouse, "scores.customer_value", on_batch=lambda done: context.log.info(
            f"value models: predicted {done:,} of {total:,} customers"))
    for note in result.notes:
        context.log.info(f"value models: {note}")
    context.log.info(f"value models: champion {result.champion} (BTYD model {result.btyd_model})")
    version = f"value-{result.champion}-{windows.as_of}-{context.run_id[:8]}"
    Registry(settings.model_registry_dir, "value", settings.lineage).save_record(
        version, {**result.card, "version": version, "run_id": context.run_id, "as_of": str(windows.as_of),
                  "warehouse": settings.lineage.warehouse, "source": settings.lineage.source, "notes": result.notes},
        value_card_markdown(version, result, settings.lineage))

    report_dir = settings.reports_dir / context.run_id
    plot_paths = {}
    production = result.fits["production"]
    plot_paths["frequency_recency_expected"], plot_paths["frequency_recency_p_alive"] = plots.frequency_recency_matrices(
        production, settings.clv_horizon_days, median_t,
        report_dir / "frequency_recency_expected.png", report_dir / "frequency_recency_p_alive.png",
    )
    if result.backtest is not None and production.name in result.backtest:
        plot_paths["calibration_by_frequency"] = plots.calibration_by_frequency(
            result.backtest, report_dir / "calibration_by_frequency.png", label=production.spec.label)
        models = [m for m in (production.name, LEARNED_MODEL, NAIVE_MODEL) if m in result.backtest]
        plot_paths["spend_by_decile"] = plots.spend_by_decile(
            result.backtest, models, result.champion, report_dir / "spend_by_decile.png")

    with settings.open_warehouse(for_models=True) as warehouse:
        ensure_model_performance(warehouse)
        warehouse.replace_rows("ops.model_performance", pd.DataFrame(result.performance), {"run_id": context.run_id})

    fits = {name: fit.as_dict() for name, fit in result.fits.items()}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "champion": result.champion,
            "btyd_model": result.btyd_model,
            "model_card": dg.MetadataValue.path(str(Registry(settings.model_registry_dir, "value").dir / version / "card.md")),
            "clv_model": result.scorer.clv_model,
            "fitted_parameters": dg.MetadataValue.json(fits),
            "backtest": dg.MetadataValue.md(_metrics_markdown(result.performance)),
            "notes": dg.MetadataValue.json(result.notes),
            **{f"plot_{k}": dg.MetadataValue.path(str(v)) for k, v in plot_paths.items()},
        }
    )
