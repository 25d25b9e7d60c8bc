"""Behavioural clusters: k-means on scaled purchase and engagement features, k chosen by silhouette.

Buyers are clustered on log-scaled spend, orders, recency, tenure, category breadth, recent interactions and
order trend (standardised). k runs over ``K_RANGE``; the k with the best silhouette (on a sample) wins. The
model is fitted on a sample of at most ``FIT_SAMPLE`` buyers and assigns everyone (vectorised). Cluster 0 is
every customer without a purchase; buyer clusters are numbered 1..k from the highest to the lowest mean
spend, and each is described by its centroid in words (its two most distinctive features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from ml.threads import model_threads

K_RANGE = range(3, 8)
FIT_SAMPLE = 20_000
SILHOUETTE_SAMPLE = 4_000
PROSPECT_LABEL = "0: no purchase yet"

# feature -> (how it is computed from customer_features, word when high, word when low)
FEATURES = {
    "spend": (lambda f: np.log1p(f.monetary_total.astype(float)), "high spend", "low spend"),
    "orders": (lambda f: np.log1p(f.n_orders.astype(float)), "many orders", "few orders"),
    "recency": (lambda f: np.log1p(f.recency_days.astype(float)), "long inactive", "bought recently"),
    "tenure": (lambda f: np.log1p(f.tenure_days.astype(float)), "long-standing", "recently joined"),
    "breadth": (lambda f: f.n_categories.astype(float), "many categories", "single category"),
    "engagement": (lambda f: np.log1p(f.n_interactions_90d.astype(float)), "highly engaged", "rarely in touch"),
    "trend": (lambda f: f.order_trend.astype(float), "buying more lately", "buying less lately"),
}


@dataclass
class Clusters:
    cluster: np.ndarray  # per customer: 0 (no purchase) or 1..k
    label: np.ndarray  # per customer: the cluster's description
    k: int
    silhouette: float
    descriptions: dict[int, str]


def _matrix(features: pd.DataFrame) -> np.ndarray:
    return np.column_stack([make(features).fillna(0).to_numpy() for make, _, _ in FEATURES.values()])


def _describe(z_centroid: np.ndarray) -> str:
    names = list(FEATURES)
    top = np.argsort(-np.abs(z_centroid), kind="stable")[:2]
    words = [FEATURES[names[i]][1] if z_centroid[i] > 0 else FEATURES[names[i]][2] for i in top]
    return ", ".join(words)


@dataclass
class ClusterModel:
    """A fitted clustering: assigns any customers (picklable: Spark's executors assign their own)."""

    scaler: StandardScaler | None  # None: too few buyers, every buyer is cluster 1
    model: KMeans | None
    renumber: np.ndarray  # KMeans' cluster -> the published number (1 = highest mean spend)
    k: int
    silhouette: float
    descriptions: dict[int, str]

    def assign(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(cluster, label) per row of ``features`` (the ``CLUSTER_COLUMNS``)."""
        n = len(features)
        cluster = np.zeros(n, dtype=np.int64)
        buyers = features["n_orders"].to_numpy(float) > 0
        if self.model is None:
            cluster[buyers] = 1
        elif buyers.any():
            with model_threads():
                cluster[buyers] = self.renumber[self.model.predict(self.scaler.transform(_matrix(features.loc[buyers])))]
        labels = np.array([self.descriptions[c] for c in range(max(self.k, 1) + 1)], dtype=object)
        return cluster, labels[cluster]


@model_threads()
def fit_clusters(features: pd.DataFrame, seed: int = 0) -> ClusterModel:
    """Scales on the buyers of ``features`` and fits k-means on at most ``FIT_SAMPLE`` of them."""
    buyers = features["n_orders"].to_numpy(float) > 0
    if buyers.sum() < max(K_RANGE) * 10:  # too few buyers to cluster: one buyer cluster
        k = int(buyers.any())
        return ClusterModel(None, None, np.arange(1, 2), k, float("nan"),
                            {0: PROSPECT_LABEL, 1: "1: all buyers (too few to cluster)"})
    X = _matrix(features.loc[buyers])
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(len(Z), min(len(Z), FIT_SAMPLE), replace=False))
    sil_rows = np.sort(rng.choice(fit_rows, min(len(fit_rows), SILHOUETTE_SAMPLE), replace=False))
    best = None
    for k in K_RANGE:
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(Z[fit_rows])
        score = silhouette_score(Z[sil_rows], model.predict(Z[sil_rows]))
        if best is None or score > best[0] + 1e-9:
            best = (score, k, model)
    score, k, model = best
    spend_order = np.argsort(-model.cluster_centers_[:, 0], kind="stable")  # cluster 1 = highest mean spend
    renumber = np.empty(k, dtype=np.int64)
    renumber[spend_order] = np.arange(1, k + 1)
    descriptions = {0: PROSPECT_LABEL}
    for old in range(k):
        descriptions[int(renumber[old])] = f"{int(renumber[old])}: {_describe(model.cluster_centers_[old])}"
    return ClusterModel(scaler, model, renumber, k, float(score), dict(sorted(descriptions.items())))


def behaviour_clusters(features: pd.DataFrame, seed: int = 0) -> Clusters:
    """Fits on ``features`` and assigns them."""
    fitted = fit_clusters(features, seed)
    cluster, label = fitted.assign(features)
    return Clusters(cluster, label, fitted.k, fitted.silhouette, fitted.descriptions)
