"""How many threads the model steps give scikit-learn's OpenMP loops: every core, or ``CRM_MODEL_THREADS``.

HistGradientBoosting (and k-means) run thousands of short OpenMP loops per fit and prediction, each ending
at a barrier where libgomp's threads spin. On a machine without an idle core (other jobs, other agents, a
test suite next door) a spinning thread waits for one that is not scheduled, and every barrier costs a
time slice. Measured on the 2-core bench machine with a load of 5-7: a 100-tree fit plus prediction on
200,000 rows x 60 features took 30-131 s with 2 threads and 18 s with 1; on 5,000 rows 7-98 s against
1.3 s; the sample's churn step spent 160 of its 233 s in the trees' split loop. On an idle machine the
second thread halves the time (the same fit: 5.7 s with 1 thread, 2.8 s with 2, 4.9 s with 2 and
``OMP_WAIT_POLICY=PASSIVE``), and the nightly job has the machine to itself while its models run (dbt is
done by then), so the default is every core, as scikit-learn's own. ``CRM_MODEL_THREADS`` (a positive
integer) sets another count: 1 on a machine shared with other jobs; the test suite sets it to 1 for its
parallel workers (tests/conftest.py).

The predictions do not depend on the OpenMP thread count: the trees sum their histograms per feature in
sample order, and a test checks identical outputs with 1 and 2 threads. BLAS is left alone here: the
logistic baseline's dot products are summed in another order with another BLAS thread count (published
probabilities moved by 2e-10 on the sample), and the BTYD fits already limit it themselves.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

ENV = "CRM_MODEL_THREADS"


def model_thread_count() -> int:
    """``CRM_MODEL_THREADS`` when set (a positive integer, else a ValueError naming it), else the number of cores."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f"{ENV}={value!r} is not a positive integer (threads for the model steps; unset: every core)")


@contextmanager
def model_threads(count: int | None = None):
    """OpenMP limited to ``count`` (default ``model_thread_count()``) threads inside the block."""
    with threadpool_limits(count or model_thread_count(), user_api="openmp"):
        yield
