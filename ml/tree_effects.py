"""Exact "what if this feature were typical" differences of a fitted HistGradientBoosting model, cheaply.

A reason code asks how a customer's risk score (the model's log-odds, the sum of its trees) changes when
one feature, or a group of features, is moved to a reference value. Trees that never split on those
features give the same output either way, so the difference is the sum over the trees that do split
on them: each customer's per-tree outputs are computed once, and only those trees are re-run on the
moved rows. The result equals ``decision_function(x) - decision_function(x_moved)`` to rounding (a test
checks this) at a fraction of the cost: on the churn model, the twelve reason candidates touch about
a third of the trees, instead of twelve full passes over all of them.

Within a tree that does split on them, a row whose path to its leaf never tests one of the moved
features reaches the same leaf when they are moved: only the rows in leaves below such a split are
re-run (``leaves`` records each row's leaf in every tree, in the same pass that gives the outputs). They
are re-run on the tree with those splits bypassed (each such node replaced by the child the reference
value takes), so the rows need not be moved (copied) at all. The per-tree outputs of a moved row are the
same leaf values as a full re-prediction gives, summed in the same order: the differences are identical
to the bit (a test checks it on a fitted model with categorical features and missing values).

It reads the fitted model's trees (``_predictors``, ``_preprocess_X``, ``_bin_mapper``, the predictor's
``nodes`` records), which are private scikit-learn attributes: the pinned version is checked by the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads


FEW_ROWS = 20_000  # tree predictions on fewer rows run on one thread (see TreeEffects._predict)
GATHER_SHARE = 0.5  # above this share of rows to re-run in a tree, all rows are run (no copy of the rows)


def _input_columns(hgb) -> list[int]:
    """For each column the trees see (after the model's own categorical encoding): its input column."""
    pre = getattr(hgb, "_preprocessor", None)
    if pre is None:
        return list(range(hgb.n_features_in_))
    order: list[int] = []
    for _, transformer, columns in pre.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        columns = np.asarray(columns)
        order.extend((np.flatnonzero(columns) if columns.dtype == bool else columns).tolist())
    return order


def _in_bitset(bitsets: np.ndarray, value: int, row: int) -> bool:
    """scikit-learn's ``in_bitset_2d_memoryview``: is category ``value`` in bitset ``row``?"""
    return bool((int(bitsets[row, value // 32]) >> (value % 32)) & 1)


class TreeEffects:
    """Per-tree view of a fitted binary ``HistGradientBoostingClassifier``; ``reference`` is a frame whose
    first row holds each feature's reference value."""

    def __init__(self, hgb, features: list[str], reference: pd.DataFrame):
        if hgb.n_trees_per_iteration_ != 1:
            raise ValueError("TreeEffects supports binary classifiers and regressors (one tree per iteration)")
        self.hgb = hgb
        self.features = list(features)
        self.trees = [p[0] for p in hgb._predictors]
        to_input = _input_columns(hgb)
        self.splits_on = []  # per tree: names of the features it splits on
        for tree in self.trees:
            nodes = tree.nodes
            used = np.unique(nodes["feature_idx"][nodes["is_leaf"] == 0])
            self.splits_on.append({self.features[to_input[i]] for i in used})
        self._bitsets, self._f_idx_map = hgb._bin_mapper.make_known_categories_bitsets()
        self._threads = _openmp_effective_n_threads()
        self._position = {self.features[i]: j for j, i in enumerate(to_input)}  # feature -> encoded column
        self._reference = self.encode(reference.iloc[:1])[0]  # the reference row, encoded like the data
        # the same trees answering with the index of the leaf a row reaches instead of its value
        self._numbered = []
        for tree in self.trees:
            nodes = tree.nodes.copy()
            nodes["value"] = np.arange(len(nodes))
            self._numbered.append(TreePredictor(nodes, tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets))
        self._leaf_dtype = np.min_scalar_type(max(len(tree.nodes) for tree in self.trees) if self.trees else 0)
        self._bypassed: dict[frozenset, list] = {}  # moved columns -> per tree using them: see _bypass
        self._left: list[np.ndarray | None] = [None] * len(self.trees)  # per tree: see _reference_goes_left

    def trees_using(self, columns) -> list[int]:
        wanted = set(columns)
        return [t for t, used in enumerate(self.splits_on) if used & wanted]

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        return self.hgb._preprocess_X(X[self.features], reset=False)

    def _predict(self, tree: TreePredictor, Xe: np.ndarray) -> np.ndarray:
        """One tree's outputs; a few rows on one thread (an OpenMP loop over 1,000 rows took 16 ms with two
        threads on the busy 2-core machine, 0.02 ms with one; the outputs do not depend on the count)."""
        threads = self._threads if len(Xe) >= FEW_ROWS else 1
        return tree.predict(Xe, known_cat_bitsets=self._bitsets, f_idx_map=self._f_idx_map, n_threads=threads)

    def _tree(self, t: int, Xe: np.ndarray) -> np.ndarray:
        return self._predict(self.trees[t], Xe)

    def per_tree(self, Xe: np.ndarray, leaves: np.ndarray | None = None) -> np.ndarray:
        """(rows x trees) outputs of every tree (read off ``leaves`` when given: the same values); stored
        tree by tree (Fortran order), as ``difference`` reads them."""
        out = np.empty((Xe.shape[0], len(self.trees)), order="F")
        for t, tree in enumerate(self.trees):
            out[:, t] = tree.nodes["value"][leaves[:, t]] if leaves is not None else self._tree(t, Xe)
        return out

    def leaves(self, Xe: np.ndarray) -> np.ndarray:
        """(rows x trees) index of the leaf (node) each row reaches in each tree (stored tree by tree)."""
        out = np.empty((Xe.shape[0], len(self.trees)), dtype=self._leaf_dtype, order="F")
        for t, tree in enumerate(self._numbered):
            out[:, t] = self._predict(tree, Xe)
        return out

    def at_reference(self, Xe: np.ndarray, columns) -> np.ndarray:
        """Encoded rows with ``columns`` set to the reference row's values."""
        moved = Xe.copy()
        for col in columns:
            moved[:, self._position[col]] = self._reference[self._position[col]]
        return moved

    def _goes_left(self, t: int) -> np.ndarray:
        if self._left[t] is None:
            self._left[t] = self._reference_goes_left(self.trees[t])
        return self._left[t]

    def _reference_goes_left(self, tree: TreePredictor) -> np.ndarray:
        """Per node: does the reference row go to the left child there? (scikit-learn's own rule,
        ``_predict_one_from_raw_data``: missing values and unknown categories follow ``missing_go_to_left``.)"""
        nodes = tree.nodes
        value = self._reference[nodes["feature_idx"]]
        missing_left = nodes["missing_go_to_left"].astype(bool)
        with np.errstate(invalid="ignore"):
            left = np.where(np.isnan(value), missing_left, value <= nodes["num_threshold"])
        for n in np.flatnonzero((nodes["is_categorical"] == 1) & (nodes["is_leaf"] == 0)):
            v = value[n]
            if np.isnan(v) or v < 0:
                left[n] = missing_left[n]
            elif _in_bitset(tree.raw_left_cat_bitsets, int(v), int(nodes["bitset_idx"][n])):
                left[n] = True
            elif _in_bitset(self._bitsets, int(v), int(self._f_idx_map[nodes["feature_idx"][n]])):
                left[n] = False
            else:
                left[n] = missing_left[n]
        return left

    def _bypass(self, columns) -> list[tuple[int, TreePredictor, np.ndarray]]:
        """Per tree splitting on ``columns``: the tree with those splits bypassed (what a row with them at
        the reference reaches, whatever its own values there) and, per node, whether the path to it passes
        such a split (rows in other leaves reach the same leaf when moved)."""
        key = frozenset(columns)
        if key not in self._bypassed:
            encoded = [self._position[c] for c in columns]
            entries = []
            for t in self.trees_using(columns):
                tree = self.trees[t]
                nodes = tree.nodes
                internal = nodes["is_leaf"] == 0
                moved = internal & np.isin(nodes["feature_idx"], encoded)
                goes_left = self._goes_left(t)
                left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)

                def resolve(n: int) -> int:
                    while moved[n]:
                        n = left[n] if goes_left[n] else right[n]
                    return n

                bypassed = nodes.copy()
                below = np.zeros(len(nodes), dtype=bool)  # the path from the root passes a moved split
                stack = [0]
                while stack:
                    n = stack.pop()
                    if internal[n]:
                        for child in (left[n], right[n]):
                            below[child] = below[n] or moved[n]
                            stack.append(child)
                        if not moved[n]:
                            bypassed["left"][n], bypassed["right"][n] = resolve(left[n]), resolve(right[n])
                root = resolve(0)
                if root != 0:
                    bypassed[0] = bypassed[root]
                entries.append((t, TreePredictor(bypassed, tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets),
                                below))
            self._bypassed[key] = entries
        return self._bypassed[key]

    def difference(self, per_tree: np.ndarray, Xe: np.ndarray, columns, leaves: np.ndarray | None = None) -> np.ndarray:
        """``score(x) - score(x with columns at the reference)`` for encoded rows ``Xe`` whose per-tree
        outputs are ``per_tree``. With ``leaves`` (``self.leaves(Xe)``), only the rows whose path in a tree
        passes a split on ``columns`` are re-run there (the same numbers); without, every row of every
        tree that splits on them is re-run on a moved copy."""
        trees = self.trees_using(columns)
        if not trees:
            return np.zeros(Xe.shape[0])
        score = np.zeros(Xe.shape[0])
        if leaves is None:
            moved = self.at_reference(Xe, columns)
            for t in trees:
                score += self._tree(t, moved)
        else:
            for t, bypassed, below in self._bypass(columns):
                rows = np.flatnonzero(below[leaves[:, t]])
                if len(rows) > Xe.shape[0] * GATHER_SHARE:  # most rows: the bypassed tree gives every row's value
                    score += self._predict(bypassed, Xe)
                    continue
                out = per_tree[:, t].copy()
                if len(rows):
                    out[rows] = self._predict(bypassed, np.take(Xe, rows, axis=0))
                score += out
        return per_tree[:, trees].sum(axis=1) - score
