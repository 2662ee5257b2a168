"""Faster runtimes for a fitted pipeline, adopted only where they reproduce scikit-learn.

scikit-learn's `predict` on one row spends most of its time in input validation and, for
forests, in joblib's dispatch (18 ms for a 100-tree forest, against ~20 us of actual tree
walking). So the server compiles the pipeline once at load time:

- linear models (optionally behind a StandardScaler) become the same numpy operations
  scikit-learn runs, minus the validation;
- random forests become one ONNX `TreeEnsemble` (ai.onnx.ml opset 5) run by onnxruntime in
  double precision, with the trees' own float64 thresholds and per-class leaf fractions
  summed in tree order, which is the arithmetic scikit-learn does;
- anything else runs on scikit-learn itself.

`compile_runtime` then checks the candidate against scikit-learn on reference rows
(identical labels, probabilities within `PROBA_TOLERANCE`) and falls back to scikit-learn
when they differ, saying so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "PROBA_TOLERANCE",
    "Prediction",
    "Runtime",
    "RuntimeChoice",
    "compile_runtime",
]

PROBA_TOLERANCE = 1e-9
"""Largest absolute difference from scikit-learn allowed in probabilities (and regression values)."""


@dataclass(frozen=True)
class Prediction:
    values: np.ndarray
    """Class labels (classification) or predicted values (regression), one per row."""
    probabilities: np.ndarray | None
    """rows x classes, in `classes` order; None for regression."""


class Runtime(Protocol):
    name: str

    def predict(self, X: np.ndarray) -> Prediction: ...


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: Runtime
    reason: str
    """Why this runtime serves: the check it passed, or why a faster one was refused."""


class SklearnRuntime:
    """The fitted pipeline itself: the reference, and the fallback."""

    name = "scikit-learn"

    def __init__(self, pipeline: Any, classification: bool) -> None:
        self._pipeline = pipeline
        self._classification = classification
        # The pipeline was fitted on a DataFrame; the server hands it arrays in the same
        # column order, which scikit-learn would otherwise warn about on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def predict(self, X: np.ndarray) -> Prediction:
        if self._classification:
            proba = self._pipeline.predict_proba(X)
            labels = self._pipeline.classes_.take(np.argmax(proba, axis=1), axis=0)
            return Prediction(labels, proba)
        return Prediction(np.asarray(self._pipeline.predict(X), dtype=np.float64), None)


class LinearRuntime:
    """StandardScaler + linear model as plain numpy, in scikit-learn's order of operations."""

    name = "numpy-linear"

    def __init__(self, pipeline: Any, classification: bool) -> None:
        from scipy.special import expit
        from sklearn.preprocessing import StandardScaler
        from sklearn.utils.extmath import softmax

        steps = [step for _, step in pipeline.steps]
        model = steps[-1]
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        for step in steps[:-1]:
            if not isinstance(step, StandardScaler) or self._mean is not None:
                raise TypeError(f"unsupported pipeline step {type(step).__name__}")
            self._mean = step.mean_ if step.with_mean else None
            self._scale = step.scale_ if step.with_std else None
        coef = np.asarray(model.coef_, dtype=np.float64)
        self._coef_t = coef.T if coef.ndim == 2 else coef
        self._intercept = model.intercept_
        self._classification = classification
        self._classes = getattr(model, "classes_", None)
        self._expit: Callable[..., np.ndarray] = expit
        self._softmax: Callable[..., np.ndarray] = softmax

    def predict(self, X: np.ndarray) -> Prediction:
        X = X.copy()
        if self._mean is not None:
            X -= self._mean
        if self._scale is not None:
            X /= self._scale
        scores = X @ self._coef_t + self._intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        if not self._classification:
            return Prediction(scores, None)
        assert self._classes is not None
        if scores.ndim == 1:
            indices = (scores > 0).astype(np.intp)
            prob = self._expit(scores.copy())
            proba = np.stack([1 - prob, prob], axis=1)
        else:
            indices = np.argmax(scores, axis=1)
            proba = self._softmax(scores.copy(), copy=False)
        return Prediction(self._classes.take(indices, axis=0), proba)


class ForestRuntime:
    """A random forest as one onnxruntime TreeEnsemble, per class, in double precision."""

    name = "onnxruntime-tree-ensemble"

    def __init__(self, pipeline: Any, classification: bool) -> None:
        import onnxruntime as ort

        steps = [step for _, step in pipeline.steps]
        if len(steps) != 1:
            raise TypeError("only a bare forest (no preprocessing steps) is compiled")
        forest = steps[0]
        if getattr(forest, "n_outputs_", 1) != 1:
            raise TypeError("multi-output forests are served by scikit-learn")
        self._classification = classification
        self._classes = getattr(forest, "classes_", None)
        self._trees = len(forest.estimators_)
        self._width = int(forest.n_features_in_)
        model = _forest_onnx(forest, classification)
        options = ort.SessionOptions()
        # One thread each: the server has few cores and batches requests itself; onnxruntime's
        # own pools would fight the event loop and each other for them.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def predict(self, X: np.ndarray) -> Prediction:
        # scikit-learn walks trees on float32 inputs against float64 thresholds.
        X64 = X.astype(np.float32).astype(np.float64)
        sums = self._session.run(None, {"X": X64})[0]
        sums /= self._trees
        if not self._classification:
            return Prediction(sums[:, 0], None)
        assert self._classes is not None
        return Prediction(self._classes.take(np.argmax(sums, axis=1), axis=0), sums)


def _forest_onnx(forest: Any, classification: bool) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    outputs = len(forest.classes_) if classification else 1
    roots: list[int] = []
    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in ("feature", "split", "true_id", "true_leaf", "false_id", "false_leaf", "target", "weight")
    }
    node_base = leaf_base = 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        internal = np.flatnonzero(left >= 0)
        leaves = np.flatnonzero(left < 0)
        values = tree.value[leaves, 0, :]
        if classification:
            values = values[:, :outputs]
            norm = values.sum(axis=1)[:, np.newaxis]
            norm[norm == 0.0] = 1.0
            values = values / norm
        else:
            values = values[:, :1]
        if internal.size == 0:
            # A single-leaf tree: one node whose both branches reach the same leaf.
            internal = np.array([0])
            left_ids = right_ids = np.array([0])
            left_leaf = right_leaf = np.array([1])
            feature = np.array([0])
            split = np.array([0.0])
            local_leaf = np.zeros(tree.node_count, dtype=np.int64)
        else:
            local_node = np.full(tree.node_count, -1, dtype=np.int64)
            local_node[internal] = np.arange(internal.size)
            local_leaf = np.full(tree.node_count, -1, dtype=np.int64)
            local_leaf[leaves] = np.arange(leaves.size)
            L, R = left[internal], right[internal]
            left_leaf, right_leaf = (left[L] < 0).astype(np.int64), (left[R] < 0).astype(np.int64)
            left_ids = np.where(left_leaf == 1, local_leaf[L], local_node[L])
            right_ids = np.where(right_leaf == 1, local_leaf[R], local_node[R])
            feature, split = tree.feature[internal], tree.threshold[internal]
        for target in range(outputs):
            # One copy of the tree per output, so that each leaf feeds one target and the
            # per-row sums accumulate in tree order, like scikit-learn's.
            roots.append(node_base)
            parts["feature"].append(feature)
            parts["split"].append(split.astype(np.float64))
            parts["true_leaf"].append(left_leaf)
            parts["false_leaf"].append(right_leaf)
            parts["true_id"].append(np.where(left_leaf == 1, left_ids + leaf_base, left_ids + node_base))
            parts["false_id"].append(np.where(right_leaf == 1, right_ids + leaf_base, right_ids + node_base))
            parts["target"].append(np.full(leaves.size, target, dtype=np.int64))
            parts["weight"].append(values[:, target].astype(np.float64))
            node_base += internal.size
            leaf_base += leaves.size
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    node = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        tree_roots=roots,
        nodes_featureids=cat["feature"].astype(np.int64).tolist(),
        nodes_splits=numpy_helper.from_array(cat["split"]),
        nodes_modes=numpy_helper.from_array(np.zeros(node_base, dtype=np.uint8)),
        nodes_truenodeids=cat["true_id"].tolist(),
        nodes_trueleafs=cat["true_leaf"].tolist(),
        nodes_falsenodeids=cat["false_id"].tolist(),
        nodes_falseleafs=cat["false_leaf"].tolist(),
        leaf_targetids=cat["target"].tolist(),
        leaf_weights=numpy_helper.from_array(cat["weight"]),
        n_targets=outputs,
        aggregate_function=1,
        post_transform=0,
    )
    width = int(forest.n_features_in_)
    graph = helper.make_graph(
        [node],
        "forest",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, outputs])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    )
    return bytes(model.SerializeToString())


def _candidate(pipeline: Any, classification: bool) -> Callable[[], Runtime] | None:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    final = pipeline.steps[-1][1]
    if isinstance(final, LogisticRegression | LinearRegression | Ridge):
        return lambda: LinearRuntime(pipeline, classification)
    if isinstance(final, RandomForestClassifier | RandomForestRegressor):
        return lambda: ForestRuntime(pipeline, classification)
    return None


def compile_runtime(pipeline: Any, classification: bool, reference: np.ndarray) -> RuntimeChoice:
    """The fastest runtime that reproduces scikit-learn on `reference`; scikit-learn otherwise."""
    baseline = SklearnRuntime(pipeline, classification)
    build = _candidate(pipeline, classification)
    if build is None:
        return RuntimeChoice(baseline, f"no faster runtime for {type(pipeline.steps[-1][1]).__name__}")
    try:
        candidate = build()
        got = candidate.predict(reference)
    except Exception as exc:
        return RuntimeChoice(baseline, f"compiling a faster runtime failed ({type(exc).__name__}: {exc})")
    want = baseline.predict(reference)
    rows = len(reference)
    if classification:
        mismatched = int(np.count_nonzero(got.values != want.values))
        if mismatched:
            return RuntimeChoice(
                baseline, f"{candidate.name} refused: {mismatched} of {rows} reference labels differ"
            )
        assert got.probabilities is not None and want.probabilities is not None
        gap = float(np.max(np.abs(got.probabilities - want.probabilities)))
        what = "labels identical, probabilities"
    else:
        gap = float(np.max(np.abs(got.values - want.values)))
        what = "values"
    if not gap <= PROBA_TOLERANCE:
        return RuntimeChoice(
            baseline, f"{candidate.name} refused: {what} differ by {gap:.3g} (> {PROBA_TOLERANCE:g})"
        )
    return RuntimeChoice(
        candidate,
        f"{candidate.name} matches scikit-learn on {rows} reference rows "
        f"({what} within {gap:.3g}, tolerance {PROBA_TOLERANCE:g})",
    )
