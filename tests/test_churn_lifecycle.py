"""The churn lifecycle's decisions (ml/churn_lifecycle.py), one test per branch, on a real warehouse.

The warehouse is the one a real pipeline run built (session fixture ``two_publications``), opened
read-only; each test has its own registry folder."""

from __future__ import annotations

import dataclasses
import duckdb
import pytest

from ml.churn_lifecycle import ChurnPolicy, run_churn_models
from ml.cutoff_data import CutoffData
from ml.registry import Lineage, Registry
from orchestration.settings import PipelineSettings
from orchestration.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.slow
HOME = Lineage(warehouse="/w/warehouse.duckdb", source="/s/crm")


@pytest.fixture(scope="module")
def warehouse(two_publications):
    work, _, _ = two_publications
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    windows = PipelineSettings(warehouse_path=str(work / "warehouse.duckdb")).resolve_windows(DuckDBWarehouse(con))
    fallback = con.sql("select customer_id, prob_no_purchase_churn_horizon from scores.customer_value").to_arrow_table().to_pandas()
    yield CutoffData(DuckDBWarehouse(con)), windows, fallback
    con.close()


def _run(warehouse, registry_dir, lineage=HOME, policy=ChurnPolicy(), windows=None):
    data, default_windows, fallback = warehouse
    return run_churn_models(data, windows=windows or default_windows, registry=Registry(registry_dir, "churn", lineage),
                            lineage=lineage, policy=policy, run_id="test", fallback=fallback)


@pytest.fixture(scope="module")
def trained(warehouse, tmp_path_factory):
    """A first run: no champion, so it trains, back-tests and promotes."""
    folder = tmp_path_factory.mktemp("registry")
    return folder, _run(warehouse, folder)


def test_no_champion_trains_backtests_promotes_and_records_lineage(trained):
    folder, out = trained
    assert out.decision["action"] == "retrain" and out.decision["promoted"]
    card, _ = Registry(folder, "churn", HOME).champion()
    assert (card.warehouse, card.source) == (HOME.warehouse, HOME.source)
    assert out.predictions.churn_model.eq(card.version).all()
    names = {r["model_name"] for r in out.performance}
    assert {"churn_hgb", "churn_logit", "churn_recency"} <= names and any(n.startswith("churn_bgnbd") or n.startswith("churn_")
                                                                          for n in names)
    auc = {r["model_name"]: r["value"] for r in out.performance if r["metric"] == "roc_auc"}
    assert auc["churn_hgb"] > auc["churn_recency"]  # the learned model beats ranking by recency
    champions = {r["model_name"] for r in out.performance if r["is_champion"]}
    assert champions == {card.model_name} and card.model_name in ("churn_hgb", "churn_logit", "churn_bgnbd")
    assert auc[card.model_name] == max(auc[m] for m in ("churn_hgb", "churn_logit", "churn_bgnbd"))


def test_same_warehouse_within_cadence_reuses(trained, warehouse):
    folder, first = trained
    out = _run(warehouse, folder)
    assert out.decision["action"] == "reuse"
    assert (out.predictions.churn_probability == first.predictions.churn_probability).all()


def test_another_source_never_reuses_the_champion(trained, warehouse, tmp_path):
    import shutil

    folder, first = trained
    shutil.copytree(folder, tmp_path / "reg")
    # the same warehouse file name, loaded from another source
    other = Lineage(warehouse=HOME.warehouse, source="/elsewhere")
    out = _run(warehouse, tmp_path / "reg", lineage=other)
    assert out.decision["action"] == "retrain" and "another warehouse or source" in " ".join(out.notes)
    # another warehouse does not even see the champion (pointers are per warehouse)
    assert Registry(tmp_path / "reg", "churn", Lineage("/other/warehouse.duckdb", HOME.source)).champion() is None


def test_a_champion_trained_after_the_as_of_date_is_never_used(trained, warehouse, tmp_path):
    """A back-dated run: the registered champion saw labels up to a later date; training is impossible
    here (minimum raised), so the fallback must be the BTYD estimate, not the champion."""
    import json
    import shutil

    folder, _ = trained
    shutil.copytree(folder, tmp_path / "reg")
    reg = Registry(tmp_path / "reg", "churn", HOME)
    card, _ = reg.champion()
    later = dataclasses.replace(card, trained_for_as_of="2026-12-31", label_window_end="2026-12-31")
    (reg.dir / card.version / "card.json").write_text(json.dumps(dataclasses.asdict(later)))
    out = _run(warehouse, tmp_path / "reg", policy=ChurnPolicy(min_customers=10**7))
    assert any("after the as-of date 2026-09-30" in n for n in out.notes)
    assert out.decision["action"] == "fallback" and out.decision["fallback"] == "btyd"
    assert out.predictions.churn_model.str.endswith("(fallback)").all()
    assert out.predictions.churn_reasons.str.contains("churn model unavailable").all()


def test_training_failure_falls_back_to_a_usable_champion(trained, warehouse, tmp_path):
    import json
    import shutil

    folder, first = trained
    shutil.copytree(folder, tmp_path / "reg")
    reg = Registry(tmp_path / "reg", "churn", HOME)
    card, _ = reg.champion()
    old = dataclasses.replace(card, trained_for_as_of="2026-01-01", label_window_end="2026-01-01")  # out of cadence
    (reg.dir / card.version / "card.json").write_text(json.dumps(dataclasses.asdict(old)))
    out = _run(warehouse, tmp_path / "reg", policy=ChurnPolicy(min_customers=10**7))
    assert out.decision["action"] == "fallback" and out.decision["fallback"] == card.version
    assert out.predictions.churn_model.eq(card.version).all()


def test_features_that_changed_force_a_retrain(trained, warehouse, tmp_path):
    import json
    import shutil

    folder, _ = trained
    shutil.copytree(folder, tmp_path / "reg")
    reg = Registry(tmp_path / "reg", "churn", HOME)
    card, _ = reg.champion()
    changed = dataclasses.replace(card, features=[*card.features, "marketing_consent_legacy"])
    (reg.dir / card.version / "card.json").write_text(json.dumps(dataclasses.asdict(changed)))
    out = _run(warehouse, tmp_path / "reg")
    assert out.decision["action"] == "retrain"
    assert any("features changed" in n and "marketing_consent_legacy" in n for n in out.notes)


def test_a_weaker_challenger_is_not_promoted(trained, warehouse, tmp_path):
    import json
    import shutil

    folder, _ = trained
    shutil.copytree(folder, tmp_path / "reg")
    reg = Registry(tmp_path / "reg", "churn", HOME)
    card, _ = reg.champion()
    strong = dataclasses.replace(card, trained_for_as_of="2026-01-01", label_window_end="2026-01-01",
                                 metrics={**card.metrics, "roc_auc": 0.999})
    (reg.dir / card.version / "card.json").write_text(json.dumps(dataclasses.asdict(strong)))
    out = _run(warehouse, tmp_path / "reg")
    assert out.decision["action"] == "retrain" and out.decision["promoted"] is False
    assert out.predictions.churn_model.eq(card.version).all()
    champion_rows = [r for r in out.performance if r["is_champion"]]
    assert {r["model_version"] for r in champion_rows} == {card.version}
