"""A release's precompiled serving runtime: compiled and checked at training, re-checked at load.

Importing scikit-learn, SciPy and pandas was most of the model server's start-up (about
3.5 s of 4-6 s here), yet a linear model or a forest needs none of them once its fitted
numbers are out. So training compiles the pipeline into a runtime that needs only numpy
(linear models) or onnxruntime (forests, gradient boosting), runs it against scikit-learn on reference rows
and, when they agree, stores it inside the MLflow model folder with scikit-learn's own
predictions on those rows:

    model/runtime/
        runtime.json     kind, classes, the scikit-learn version it was checked against
        linear.npz | forest.onnx | boosted_trees.onnx
        reference.npz    reference rows and scikit-learn's labels/probabilities/values on them

Being inside the model folder, the bundle is covered by the release checksum. The server
loads it without scikit-learn and serves it only if, in the server's own environment, it
reproduces the recorded predictions; otherwise it serves the pipeline with scikit-learn.
Arrays are read with `allow_pickle=False`: nothing in the bundle can run code.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.runtime import (
    BoostedTreesRuntime,
    ForestRuntime,
    LinearRuntime,
    Prediction,
    Runtime,
    RuntimeChoice,
    SklearnRuntime,
    compare,
)

__all__ = ["BUNDLE_FORMAT", "RUNTIME_SUBDIR", "BundleError", "export_runtime", "load_runtime"]

RUNTIME_SUBDIR = "runtime"
BUNDLE_FORMAT = 1
_MANIFEST = "runtime.json"
_REFERENCE = "reference.npz"
_LINEAR = "linear.npz"
_FOREST = "forest.onnx"
_BOOSTED = "boosted_trees.onnx"
_FILES = {LinearRuntime.name: _LINEAR, ForestRuntime.name: _FOREST, BoostedTreesRuntime.name: _BOOSTED}


class BundleError(RuntimeError):
    """The bundle is unreadable, from another format, or does not reproduce scikit-learn here."""


@dataclass(frozen=True)
class _Compiled:
    kind: str
    files: dict[str, bytes]
    params: dict[str, Any]
    """Manifest entries the runtime needs besides its files (the forest's tree count)."""


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _compile_linear(pipeline: Any) -> _Compiled:
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in pipeline.steps]
    arrays: dict[str, np.ndarray] = {}
    for step in steps[:-1]:
        if not isinstance(step, StandardScaler) or arrays:
            raise TypeError(f"unsupported pipeline step {type(step).__name__}")
        if step.with_mean:
            arrays["mean"] = np.asarray(step.mean_, dtype=np.float64)
        if step.with_std:
            arrays["scale"] = np.asarray(step.scale_, dtype=np.float64)
    model = steps[-1]
    arrays["coef"] = np.asarray(model.coef_, dtype=np.float64)
    arrays["intercept"] = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    return _Compiled(LinearRuntime.name, {_LINEAR: _npz(**arrays)}, {})


def _compile_forest(pipeline: Any, classification: bool) -> _Compiled:
    steps = [step for _, step in pipeline.steps]
    if len(steps) != 1:
        raise TypeError("only a bare forest (no preprocessing steps) is compiled")
    forest = steps[0]
    if getattr(forest, "n_outputs_", 1) != 1:
        raise TypeError("multi-output forests are served by scikit-learn")
    classes = len(forest.classes_) if classification else 1
    # A binary forest sums only the second class's fractions (the first is one minus that, within
    # 1e-16 of scikit-learn's own sum): half the tree walks of one copy per class.
    binary = classes == 2
    outputs = 1 if binary else classes
    ensemble = _Ensemble(outputs)
    for estimator in forest.estimators_:
        tree = estimator.tree_
        values = tree.value[:, 0, :]
        if classification:
            # Per-leaf class fractions, as scikit-learn's predict_proba averages them.
            values = values[:, :classes]
            norm = values.sum(axis=1)[:, np.newaxis]
            norm[norm == 0.0] = 1.0
            values = values / norm
        if binary:
            values = values[:, 1:]
        # One copy of each tree per output, so each output's sums run in tree order.
        for target in range(outputs):
            ensemble.add(
                tree.children_left,
                tree.children_right,
                tree.feature,
                tree.threshold,
                values[:, target],
                target,
            )
    model = ensemble.onnx(int(forest.n_features_in_))
    params = {"trees": len(forest.estimators_), "binary": binary}
    return _Compiled(ForestRuntime.name, {_FOREST: model}, params)


_LINKS = {
    "IdentityLink": "identity",
    "LogLink": "exp",
    "LogitLink": "logistic",
    "MultinomialLogit": "softmax",
}


def _compile_boosting(pipeline: Any) -> _Compiled:
    """HistGradientBoosting: the baseline as a first single-leaf tree per output, then every
    iteration's trees in order (each feeding its own output), then the loss's inverse link."""
    steps = [step for _, step in pipeline.steps]
    if len(steps) != 1:
        raise TypeError("only a bare gradient boosting model (no preprocessing steps) is compiled")
    model = steps[0]
    if (
        getattr(model, "_preprocessor", None) is not None
        or getattr(model, "is_categorical_", None) is not None
    ):
        raise TypeError("categorical features are served by scikit-learn")
    link = _LINKS.get(type(model._loss.link).__name__)
    if link is None:
        raise TypeError(f"no inverse link for {type(model._loss.link).__name__}")
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    outputs = baseline.size
    ensemble = _Ensemble(outputs)
    leaf = np.array([-1])
    for target in range(outputs):
        ensemble.add(leaf, leaf, np.array([0]), np.array([0.0]), baseline[target : target + 1], target)
    for iteration in model._predictors:
        for target, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise TypeError("categorical splits are served by scikit-learn")
            is_leaf = nodes["is_leaf"].astype(bool)
            left = np.where(is_leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(is_leaf, -1, nodes["right"].astype(np.int64))
            ensemble.add(left, right, nodes["feature_idx"], nodes["num_threshold"], nodes["value"], target)
    onnx_model = ensemble.onnx(int(model.n_features_in_))
    return _Compiled(BoostedTreesRuntime.name, {_BOOSTED: onnx_model}, {"link": link})


class _Ensemble:
    """Trees gathered into one ONNX TreeEnsemble node (ai.onnx.ml opset 5, float64, sum).

    Each tree feeds one output; `tree_roots` keeps the order trees are added in, which is the
    order onnxruntime adds their leaves into each row's sums (on one thread).
    """

    def __init__(self, outputs: int) -> None:
        self.outputs = outputs
        self.roots: list[int] = []
        self.parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in (
                "feature",
                "split",
                "true_id",
                "true_leaf",
                "false_id",
                "false_leaf",
                "target",
                "weight",
            )
        }
        self.node_base = self.leaf_base = 0

    def add(
        self,
        left: np.ndarray,
        right: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        value: np.ndarray,
        target: int,
    ) -> None:
        """One binary tree by node arrays (children -1 at leaves; `x <= threshold` goes left)
        whose leaves add `value[leaf]` to output `target`."""
        internal = np.flatnonzero(left >= 0)
        leaves = np.flatnonzero(left < 0)
        weights = np.asarray(value, dtype=np.float64)[leaves]
        if internal.size == 0:
            # A single-leaf tree: one node whose both branches reach the same leaf.
            internal = np.array([0])
            left_ids = right_ids = np.array([0])
            left_leaf = right_leaf = np.array([1])
            features = np.array([0])
            splits = np.array([0.0])
        else:
            local_node = np.full(left.size, -1, dtype=np.int64)
            local_node[internal] = np.arange(internal.size)
            local_leaf = np.full(left.size, -1, dtype=np.int64)
            local_leaf[leaves] = np.arange(leaves.size)
            L, R = left[internal], right[internal]
            left_leaf, right_leaf = (left[L] < 0).astype(np.int64), (left[R] < 0).astype(np.int64)
            left_ids = np.where(left_leaf == 1, local_leaf[L], local_node[L])
            right_ids = np.where(right_leaf == 1, local_leaf[R], local_node[R])
            features, splits = feature[internal], threshold[internal]
        parts = self.parts
        self.roots.append(self.node_base)
        parts["feature"].append(np.asarray(features, dtype=np.int64))
        parts["split"].append(np.asarray(splits, dtype=np.float64))
        parts["true_leaf"].append(left_leaf)
        parts["false_leaf"].append(right_leaf)
        parts["true_id"].append(
            np.where(left_leaf == 1, left_ids + self.leaf_base, left_ids + self.node_base)
        )
        parts["false_id"].append(
            np.where(right_leaf == 1, right_ids + self.leaf_base, right_ids + self.node_base)
        )
        parts["target"].append(np.full(leaves.size, target, dtype=np.int64))
        parts["weight"].append(weights)
        self.node_base += internal.size
        self.leaf_base += leaves.size

    def onnx(self, width: int) -> bytes:
        from onnx import TensorProto, helper, numpy_helper

        cat = {k: np.concatenate(v) for k, v in self.parts.items()}
        node = helper.make_node(
            "TreeEnsemble",
            ["X"],
            ["Y"],
            domain="ai.onnx.ml",
            tree_roots=self.roots,
            nodes_featureids=cat["feature"].tolist(),
            nodes_splits=numpy_helper.from_array(cat["split"]),
            nodes_modes=numpy_helper.from_array(np.zeros(self.node_base, dtype=np.uint8)),
            nodes_truenodeids=cat["true_id"].tolist(),
            nodes_trueleafs=cat["true_leaf"].tolist(),
            nodes_falsenodeids=cat["false_id"].tolist(),
            nodes_falseleafs=cat["false_leaf"].tolist(),
            leaf_targetids=cat["target"].tolist(),
            leaf_weights=numpy_helper.from_array(cat["weight"]),
            n_targets=self.outputs,
            aggregate_function=1,
            post_transform=0,
        )
        graph = helper.make_graph(
            [node],
            "trees",
            [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
            [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, self.outputs])],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
        )
        return bytes(model.SerializeToString())


def _compile(pipeline: Any, classification: bool) -> _Compiled | None:
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    final = pipeline.steps[-1][1]
    if isinstance(final, LogisticRegression | LinearRegression | Ridge):
        return _compile_linear(pipeline)
    if isinstance(final, RandomForestClassifier | RandomForestRegressor):
        return _compile_forest(pipeline, classification)
    if isinstance(final, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return _compile_boosting(pipeline)
    return None


def _open(kind: str, files: dict[str, bytes], params: dict[str, Any], classes: list[Any] | None) -> Runtime:
    labels = None
    if classes is not None:
        # String labels as objects, as scikit-learn keeps them (and as the server serializes them).
        textual = any(isinstance(label, str) for label in classes)
        labels = np.array(classes, dtype=object) if textual else np.asarray(classes)
    if kind == LinearRuntime.name:
        with np.load(io.BytesIO(files[_LINEAR]), allow_pickle=False) as arrays:
            return LinearRuntime(
                arrays["coef"],
                arrays["intercept"],
                arrays.get("mean"),
                arrays.get("scale"),
                labels,
            )
    if kind == ForestRuntime.name:
        binary = bool(params.get("binary", False))
        return ForestRuntime(files[_FOREST], int(params["trees"]), labels, binary)
    if kind == BoostedTreesRuntime.name:
        return BoostedTreesRuntime(files[_BOOSTED], str(params["link"]), labels)
    raise BundleError(f"unknown runtime kind {kind!r}")


def export_runtime(
    pipeline: Any, classes: list[Any] | None, reference: np.ndarray, model_dir: Path
) -> RuntimeChoice:
    """Compile `pipeline`, check it against scikit-learn on `reference`, and store it if it agrees.

    `classes` are the classifier's labels as plain Python values (None for a regressor).

    Returns the runtime the server will find (the compiled one, or scikit-learn) and why.
    Nothing is written when the compiled runtime is refused.
    """
    classification = classes is not None
    baseline = SklearnRuntime(pipeline, classification)
    try:
        compiled = _compile(pipeline, classification)
        if compiled is None:
            return RuntimeChoice(baseline, f"no faster runtime for {type(pipeline.steps[-1][1]).__name__}")
        candidate = _open(compiled.kind, compiled.files, compiled.params, classes)
        got = candidate.predict(reference)
    except Exception as exc:
        return RuntimeChoice(baseline, f"compiling a faster runtime failed ({type(exc).__name__}: {exc})")
    want = baseline.predict(reference)
    ok, how = compare(got, want)
    if not ok:
        return RuntimeChoice(baseline, f"{compiled.kind} refused at training: {how}")
    recorded: dict[str, np.ndarray] = {"X": reference, "values": want.values}
    if classification:
        assert want.probabilities is not None and classes is not None
        # Labels by class index: label arrays of strings or mixed types would need pickle.
        recorded["values"] = np.argmax(want.probabilities, axis=1)
        recorded["probabilities"] = want.probabilities
    from importlib.metadata import version

    manifest = {
        "format": BUNDLE_FORMAT,
        "kind": compiled.kind,
        "classes": classes,
        "checked_against": f"scikit-learn {version('scikit-learn')}",
        **compiled.params,
    }
    target = model_dir / RUNTIME_SUBDIR
    target.mkdir(parents=True, exist_ok=False)
    for name, data in {**compiled.files, _REFERENCE: _npz(**recorded)}.items():
        (target / name).write_bytes(data)
    (target / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return RuntimeChoice(candidate, f"{compiled.kind} matches scikit-learn: {how}")


def load_runtime(model_dir: Path) -> RuntimeChoice | None:
    """The bundle's runtime, verified here against its recorded predictions; None if there is none.

    Raises BundleError when a bundle is present but cannot be served.
    """
    folder = model_dir / RUNTIME_SUBDIR
    if not (folder / _MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        if manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"runtime bundle format {manifest.get('format')!r} is not {BUNDLE_FORMAT}")
        kind, classes = str(manifest["kind"]), manifest["classes"]
        names = [name for runtime, name in _FILES.items() if runtime == kind]
        files = {name: (folder / name).read_bytes() for name in names}
        runtime = _open(kind, files, manifest, classes)
        with np.load(folder / _REFERENCE, allow_pickle=False) as recorded:
            reference = np.asarray(recorded["X"], dtype=np.float64)
            if classes is None:
                want = Prediction(recorded["values"], None)
            else:
                want = Prediction(np.asarray(classes).take(recorded["values"]), recorded["probabilities"])
        got = runtime.predict(reference)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"runtime bundle in {folder} is unusable ({type(exc).__name__}: {exc})") from exc
    ok, how = compare(got, want)
    if not ok:
        raise BundleError(f"{kind} does not reproduce {manifest['checked_against']} here: {how}")
    return RuntimeChoice(runtime, f"{kind} precompiled; reproduces {manifest['checked_against']}: {how}")
