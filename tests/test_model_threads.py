"""The model steps run scikit-learn on every core unless CRM_MODEL_THREADS says otherwise (ml/threads.py):
the choice must not change a prediction, only the time."""

from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from ml.churn import train_churn_models
from ml.threads import ENV, model_thread_count, model_threads
from test_churn_and_registry import _training_set


def _openmp_threads() -> set[int]:
    return {d["num_threads"] for d in threadpool_info() if d["user_api"] == "openmp"}


def test_thread_count_defaults_to_every_core_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert model_thread_count() == os.cpu_count()
    monkeypatch.setenv(ENV, "2")
    assert model_thread_count() == 2
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=f"CRM_MODEL_THREADS='{bad}' is not a positive integer"):
            model_thread_count()
    monkeypatch.setenv(ENV, "1")
    with model_threads(1):
        assert _openmp_threads() == {1}


def test_predictions_do_not_depend_on_the_thread_count(monkeypatch):
    ts, test = _training_set(4000), _training_set(1500, seed=1)
    predictions = []
    for threads in ("1", "2"):
        monkeypatch.setenv(ENV, threads)
        models = train_churn_models(ts, min_customers=100, baseline=False)
        with model_threads():
            predictions.append(models.predict(test.X))
    np.testing.assert_array_equal(predictions[0], predictions[1])
