"""The value step's predictions for every customer (``ml/value_models.py`` ``ValueScorer``): the same however
the customers are split into batches, in memory or written through the warehouse interface, because a
customer's simulated interval uses the random draws of its block (``md5(customer_id)``'s first digits), never
those of whatever batch it happens to travel in (Spark's executors split the customers their own way)."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml.cutoff_data import CutoffData
from ml.value_models import BLOCK, run_value_models
from orchestration.settings import PipelineSettings
from orchestration.warehouse import DuckDBWarehouse


@pytest.fixture(scope="module")
def value_result(two_publications, tmp_path_factory):
    work, _, _ = two_publications
    copy = tmp_path_factory.mktemp("value") / "warehouse.duckdb"
    shutil.copyfile(work / "warehouse.duckdb", copy)
    con = duckdb.connect(str(copy))
    warehouse = DuckDBWarehouse(con)
    windows = PipelineSettings(warehouse_path=str(copy)).resolve_windows(warehouse)
    result = run_value_models(CutoffData(warehouse), windows=windows, annual_discount_rate=0.1, run_id="test")
    yield result, warehouse
    con.close()


def test_a_customers_prediction_does_not_depend_on_the_batch_it_is_predicted_in(value_result):
    result, warehouse = value_result
    whole = result.predictions
    n = len(whole)
    assert n == result.data.count(result.scorer.as_of) > 1000
    assert whole.customer_id.is_unique and whole.customer_id.is_monotonic_increasing
    result.scorer.batch = 97  # much smaller than a block: a batch is then one whole block
    try:
        split = result.predictions
        assert result.write(warehouse, "scores.value_split") == n
    finally:
        result.scorer.batch = 200_000
    pd.testing.assert_frame_equal(split, whole)
    written = warehouse.frame("select * from scores.value_split order by customer_id")
    pd.testing.assert_frame_equal(written, whole, check_dtype=False)


def test_intervals_are_simulated_per_block_and_hold_their_point(value_result):
    result, warehouse = value_result
    whole = result.predictions
    for point in ("expected_purchases", "clv"):
        assert (whole[f"{point}_low"] <= whole[point] + 1e-12).all()
        assert (whole[point] <= whole[f"{point}_high"] + 1e-12).all()
    buyers = whole[warehouse.frame("select customer_id, n_orders from marts.customer_features")
                   .set_index("customer_id").loc[whole.customer_id, "n_orders"].to_numpy() > 0]
    assert buyers.expected_purchases_high.gt(buyers.expected_purchases_low).mean() > 0.5  # a real interval
    # md5's first digit splits the customers into 16 blocks of about the same size
    blocks = warehouse.frame(f"select customer_id, substr(md5(customer_id), 1, 1) as {BLOCK} "
                             "from marts.customer_features")
    sizes = blocks[BLOCK].value_counts()
    assert len(sizes) == 16 and sizes.max() < 2 * sizes.mean()
    assert np.isfinite(whole.select_dtypes("number").to_numpy()).all()


def test_the_btyd_fits_read_the_engines_unique_rows_and_fit_what_every_customer_gives(value_result):
    """The BTYD fits read the buyers' summaries as unique rows counted by the engine (``btyd_summary``), not
    every customer: the same rows and counts as every customer's features give, and the same fit."""
    from ml.btyd_summary import BtydSummary
    from ml.value_models import BTYD_INPUTS, _buyers, fit_btyd

    result, _ = value_result
    data, as_of = result.data, result.scorer.as_of
    engine = data.btyd_summary(as_of)
    features = data.features(as_of, BTYD_INPUTS)
    local = BtydSummary.of(*_buyers(features)[1:])
    buyers = int((features.n_orders > 0).sum())
    assert engine.customers == local.customers == buyers
    assert len(engine.x) < buyers and engine.n.max() > 1  # buyers share rows (a quarter of them at a million)
    for name in ("x", "tx", "T", "n", "spend_x", "spend_m", "spend_n"):
        np.testing.assert_array_equal(getattr(engine, name), getattr(local, name), err_msg=name)
    assert engine.spend_of == local.spend_of and abs(engine.corr - local.corr) < 1e-12
    a, b = fit_btyd(engine, "bgnbd"), fit_btyd(features, "bgnbd")
    assert a.params.as_dict() == b.params.as_dict() and a.gg.as_dict() == b.gg.as_dict()


def test_lead_rates_read_only_the_leads_and_at_most_a_sample_of_them(value_result):
    """The lead rates read the leads' outcome columns only (the engine picks the leads), the same rates as every
    customer's rows give; beyond ``limit`` leads, a sample the engine draws (the same each time)."""
    from ml.value_models import LEAD_COLUMNS, lead_rates, leads_at

    result, _ = value_result
    data = result.data
    cutoff = data.warehouse.scalar("select max(as_of_date) from marts.customer_outcomes where value_window_complete")
    everyone = lead_rates(data.features(cutoff, ["customer_id", "n_orders"]), data.outcomes(cutoff), "value")
    assert leads_at(data, cutoff, "value") == everyone and everyone.purchases_per_lead > 0
    n = data.lead_count(cutoff)
    sample = data.lead_outcomes(cutoff, LEAD_COLUMNS, n // 3)
    assert len(sample) == n // 3 and sample.customer_id.is_monotonic_increasing
    assert sample.customer_id.tolist() == data.lead_outcomes(cutoff, LEAD_COLUMNS, n // 3).customer_id.tolist()
    assert set(sample.customer_id) <= set(data.lead_outcomes(cutoff, LEAD_COLUMNS, n).customer_id)
    assert list(sample.columns) == LEAD_COLUMNS
