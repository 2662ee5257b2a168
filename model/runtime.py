"""The runtimes a release is served on, and the check that decides whether one may serve.

scikit-learn's `predict` on one row spends most of its time in input validation and, for
forests, in joblib's dispatch (18 ms for a 100-tree forest, against ~20 us of tree walking).
So training compiles the pipeline (`model/runtime_bundle.py`) into one of:

- `LinearRuntime`: StandardScaler + linear model as the numpy operations scikit-learn runs,
  minus the validation;
- `ForestRuntime`: a random forest as one ONNX `TreeEnsemble` run by onnxruntime in double
  precision, with scikit-learn's float64 thresholds and per-tree leaf fractions;
- `BoostedTreesRuntime`: histogram gradient boosting as one such `TreeEnsemble` (its baseline
  a first single-leaf tree, leaf values summed in scikit-learn's order), then its inverse link;

and `SklearnRuntime` is the fitted pipeline itself, the fallback. Only numpy and
onnxruntime are imported here: the fast runtimes must load without scikit-learn. Training
(which compiles and checks them) and the server (which loads them) share this module, so it is
training code: a change to it is a new release.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "PROBA_TOLERANCE",
    "BoostedTreesRuntime",
    "ForestRuntime",
    "LinearRuntime",
    "Prediction",
    "Runtime",
    "RuntimeChoice",
    "SklearnRuntime",
    "compare",
]

_TILE_ROWS = 64
"""Rows a linear runtime standardises per pass of numpy's inner loop (`LinearRuntime._standardized`)."""
_TILED_FROM_ROWS = 512
"""Fewer rows are standardised as they are: the tiles' extra numpy calls (about 2 us) cost more
than they save below about 300 rows."""

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
    """(x - mean) / scale @ coef + intercept, then scikit-learn's logistic or softmax link."""

    name = "numpy-linear"

    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        mean: np.ndarray | None,
        scale: np.ndarray | None,
        classes: np.ndarray | None,
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64)
        self._coef_t = coef.T if coef.ndim == 2 else coef
        self._intercept = np.asarray(intercept, dtype=np.float64)
        self._mean = mean
        self._scale = scale
        self._classes = classes
        self._tiled = [None if v is None else np.tile(v, _TILE_ROWS) for v in (mean, scale)]

    def predict(self, X: np.ndarray) -> Prediction:
        scores = self._standardized(X) @ self._coef_t + self._intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        if self._classes is None:
            return Prediction(scores, None)
        if scores.ndim == 1:
            return Prediction(self._classes.take((scores > 0).view(np.int8), axis=0), _logistic(scores))
        indices = np.argmax(scores, axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        return Prediction(self._classes.take(indices, axis=0), scores / scores.sum(axis=1, keepdims=True))

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        """(X - mean) / scale in a new C-order array, value for value what scikit-learn computes.
        numpy runs a row-long mean over a batch through its buffered iterator (copying the rows in
        and out of a buffer); over rows taken _TILE_ROWS at a time against the mean repeated as
        often it runs its plain loop: 10,000 rows of 20 features predict in 0.20 ms, not 0.29.
        Fewer than _TILED_FROM_ROWS rows, and the rows after the last whole tile, go as they are."""
        out = np.empty(X.shape, X.dtype)
        if len(X) < _TILED_FROM_ROWS or X.ndim != 2 or X.dtype != np.float64 or not X.flags.c_contiguous:
            _standardize(out, X, self._mean, self._scale)
            return out
        whole = len(X) - len(X) % _TILE_ROWS
        tiles = (-1, _TILE_ROWS * X.shape[1])
        _standardize(out[:whole].reshape(tiles), X[:whole].reshape(tiles), *self._tiled)
        _standardize(out[whole:], X[whole:], self._mean, self._scale)
        return out


def _standardize(out: np.ndarray, X: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None) -> None:
    """`out` = (X - mean) / scale."""
    if mean is None:
        np.copyto(out, X)
    else:
        np.subtract(X, mean, out=out)
    if scale is not None:
        out /= scale


def _logistic(scores: np.ndarray) -> np.ndarray:
    """[1 - p, p] with p = 1 / (1 + exp(-score)), the same operations as before in place in one
    array: on a single row each numpy call's fixed cost is the whole cost, and stacking two
    columns cost more than the arithmetic (16% fewer instructions per single-row call)."""
    proba = np.empty((len(scores), 2))
    prob = proba[:, 1]
    np.negative(scores, out=prob)
    with np.errstate(over="ignore"):  # exp overflows to inf for scores below -709: p = 0
        np.exp(prob, out=prob)
    prob += 1.0
    np.divide(1.0, prob, out=prob)
    np.subtract(1.0, prob, out=proba[:, 0])
    return proba


def _tree_session(model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread each: the server has few cores and batches requests itself; onnxruntime's
    # own pools would fight the event loop and each other for them. One thread also keeps the
    # per-row sums in tree order, which is what makes them equal scikit-learn's.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class ForestRuntime:
    """A forest as one onnxruntime TreeEnsemble summing per-tree outputs, divided by the tree count."""

    name = "onnxruntime-tree-ensemble"

    def __init__(self, model: bytes, trees: int, classes: np.ndarray | None, binary: bool = False) -> None:
        self._session = _tree_session(model)
        self._trees = trees
        self._classes = classes
        self._binary = binary
        """The ensemble sums the second class only; the first is one minus it."""

    def predict(self, X: np.ndarray) -> Prediction:
        # scikit-learn walks trees on float32 inputs against float64 thresholds (values beyond
        # float32's range become +-inf there too, silently).
        with np.errstate(over="ignore"):
            X64 = X.astype(np.float32).astype(np.float64)
        sums = self._session.run(None, {"X": X64})[0]
        sums /= self._trees
        if self._classes is None:
            return Prediction(sums[:, 0], None)
        if self._binary:
            sums = np.concatenate([1.0 - sums, sums], axis=1)
        return Prediction(self._classes.take(np.argmax(sums, axis=1), axis=0), sums)


BOOSTING_LINKS = ("identity", "exp", "logistic", "softmax")
"""Inverse links of scikit-learn's losses the boosted-trees runtime applies (squared, absolute and
quantile error; Poisson and gamma; binary and multiclass log loss)."""


class BoostedTreesRuntime:
    """HistGradientBoosting as one onnxruntime TreeEnsemble (raw scores), then the inverse link.

    scikit-learn compares float64 inputs with float64 thresholds (no float32 cast, unlike the
    forests) and starts each row's score at the baseline; the ensemble holds the baseline as
    a first single-leaf tree per output, so the sums run in the same order.
    """

    name = "onnxruntime-boosted-trees"

    def __init__(self, model: bytes, link: str, classes: np.ndarray | None) -> None:
        if link not in BOOSTING_LINKS:
            raise ValueError(f"unknown link {link!r}; known: {', '.join(BOOSTING_LINKS)}")
        self._session = _tree_session(model)
        self._link = link
        self._classes = classes

    def predict(self, X: np.ndarray) -> Prediction:
        raw = self._session.run(None, {"X": np.ascontiguousarray(X, dtype=np.float64)})[0]
        if self._classes is None:
            values = raw[:, 0]
            if self._link == "exp":
                values = np.exp(values)
            return Prediction(values, None)
        if self._link == "logistic":
            with np.errstate(over="ignore"):  # exp overflows to inf for scores below -709: p = 0
                positive = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            proba = np.stack([1 - positive, positive], axis=1)
        else:
            raw -= raw.max(axis=1, keepdims=True)
            np.exp(raw, out=raw)
            proba = raw / raw.sum(axis=1, keepdims=True)
        return Prediction(self._classes.take(np.argmax(proba, axis=1), axis=0), proba)


def compare(got: Prediction, want: Prediction) -> tuple[bool, str]:
    """Whether `got` reproduces `want` (identical labels, numbers within PROBA_TOLERANCE), and how closely."""
    rows = len(want.values)
    if want.probabilities is not None:
        mismatched = int(np.count_nonzero(got.values != want.values))
        if mismatched:
            return False, f"{mismatched} of {rows} reference labels differ"
        assert got.probabilities is not None
        gap = float(np.max(np.abs(got.probabilities - want.probabilities)))
        what = "labels identical, probabilities"
    else:
        gap = float(np.max(np.abs(got.values - want.values)))
        what = "values"
    if not gap <= PROBA_TOLERANCE:
        return False, f"{what} differ by up to {gap:.3g} (tolerance {PROBA_TOLERANCE:g})"
    return True, f"{what} within {gap:.3g} (tolerance {PROBA_TOLERANCE:g}) on {rows} reference rows"
