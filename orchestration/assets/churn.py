"""Churn: the registered champion reused or retrained (``ml/churn_lifecycle.py``), scores with reasons.

scikit-learn and matplotlib are imported when the step runs (see ``value_models.py``)."""

import dagster as dg
import pandas as pd

from orchestration.assets.value_models import CUSTOMER_VALUE, FEATURES_HISTORY, OUTCOMES
from orchestration.memory import release_memory
from orchestration.publication import ensure_model_performance
from orchestration.settings import PipelineSettings

CUSTOMER_CHURN = dg.AssetKey(["scores", "customer_churn"])


@dg.asset(
    key=CUSTOMER_CHURN,
    deps=[FEATURES_HISTORY, OUTCOMES, CUSTOMER_VALUE],
    group_name="models",
    kinds={"python", "scikitlearn", "duckdb"},
    description="Churn probability (no completed purchase within the churn horizon) from the registered champion "
    "(calibrated HistGradientBoosting) of this warehouse and source, its back-test against logistic regression, "
    "the BTYD estimate and recency, and reason codes. Needs one complete churn window with "
    "CRM_CHURN_MIN_CUSTOMERS customers; below that, the value models' BTYD estimate.",
)
def customer_churn(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from ml import plots
    from ml.churn_lifecycle import ChurnPolicy, run_churn_models
    from ml.cutoff_data import CutoffData
    from ml.registry import Registry
    from ml.threads import model_threads

    # the model threads (CRM_MODEL_THREADS, ml/threads.py) for the back-test's predictions too; training and
    # scoring set them themselves
    with settings.open_warehouse(for_models=True) as warehouse, model_threads():
        windows = settings.run_windows(warehouse, context.run_id)
        value = warehouse.frame(
            "select customer_id, prob_no_purchase_churn_horizon, btyd_model from scores.customer_value")
        data = CutoffData(warehouse)
        outcome = run_churn_models(
            data, windows=windows, registry=Registry(settings.model_registry_dir, "churn", settings.lineage),
            lineage=settings.lineage, run_id=context.run_id, fallback=value,
            btyd_model=str(value.btyd_model.iloc[0]) if len(value) else "bgnbd",
            policy=ChurnPolicy(cadence_days=settings.churn_retrain_days, min_customers=settings.churn_min_customers),
            log=context.log.info,
        )
        del value
        release_memory()
        total = data.count(windows.as_of)
        # every customer scored where the data is: batch by batch here, on the executors on Spark
        rows = outcome.write(warehouse, "scores.customer_churn",
                             on_batch=lambda done: context.log.info(f"churn: scored {done:,} of {total:,} customers"))
        model_version, mean_churn = warehouse.rows(
            "select coalesce(min(churn_model), 'none'), avg(churn_probability) from scores.customer_churn")[0]
        ensure_model_performance(warehouse)
        warehouse.replace_rows("ops.model_performance", pd.DataFrame(outcome.performance),
                               {"run_id": context.run_id, "task": "churn"})
    plot_paths = plots.churn_plots(*outcome.evaluation, settings.reports_dir / context.run_id) if outcome.evaluation else {}
    release_memory()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows,
        "decision": dg.MetadataValue.json({k: str(v) for k, v in outcome.decision.items()}),
        "churn_model": model_version,
        "notes": dg.MetadataValue.json(outcome.notes),
        "mean_churn_probability": float(mean_churn) if mean_churn is not None else float("nan"),
        **{f"plot_{k}": dg.MetadataValue.path(str(v)) for k, v in plot_paths.items()},
    })
