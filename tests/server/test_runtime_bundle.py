"""The precompiled serving runtime: checked at training, re-checked at load, refused when wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest

from model.artifact import directory_checksum
from model.estimators import Task, build_pipeline
from model.runtime import LinearRuntime, SklearnRuntime
from model.runtime_bundle import RUNTIME_SUBDIR, BundleError, export_runtime, load_runtime
from model.server.loader import load_release
from model.spec import RegistrySettings
from tests.server.conftest import Release, copy_release


def _dataset(name: str) -> tuple[pd.DataFrame, Any]:
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    loader = {"iris": load_iris, "diabetes": load_diabetes, "breast_cancer": load_breast_cancer}
    bunch = loader[name.removesuffix("_names")](as_frame=True)
    if name.endswith("_names"):
        return bunch.data, bunch.target_names[bunch.target]
    return bunch.data, bunch.target


def _fitted(estimator: str, task: Task, dataset: str, **params: Any) -> tuple[Any, np.ndarray]:
    X, y = _dataset(dataset)
    pipeline = build_pipeline(estimator, task, params, seed=0)
    pipeline.fit(X, y)
    rng = np.random.default_rng(1)
    # Training rows plus jittered ones, so that rows also land between the training points.
    reference = np.vstack([X.to_numpy(), X.to_numpy() + rng.normal(0, X.std().to_numpy() / 4, X.shape)])
    return pipeline, reference


BOOSTED = "onnxruntime-boosted-trees"


def _classes(pipeline: Any, task: Task) -> list[Any] | None:
    """The labels as training passes them: plain Python values, None for a regressor."""
    return [c.item() for c in pipeline.classes_] if task == "classification" else None


@pytest.mark.parametrize(
    ("estimator", "task", "dataset", "params", "kind"),
    [
        ("logistic_regression", "classification", "breast_cancer", {"max_iter": 500}, "numpy-linear"),
        ("logistic_regression", "classification", "iris", {"max_iter": 500}, "numpy-linear"),
        ("random_forest", "classification", "iris", {"n_estimators": 25}, "onnxruntime-tree-ensemble"),
        (
            "random_forest",
            "classification",
            "breast_cancer",
            {"n_estimators": 30},
            "onnxruntime-tree-ensemble",
        ),
        ("random_forest", "classification", "iris_names", {"n_estimators": 9}, "onnxruntime-tree-ensemble"),
        ("logistic_regression", "classification", "iris_names", {"max_iter": 500}, "numpy-linear"),
        ("random_forest", "regression", "diabetes", {"n_estimators": 25}, "onnxruntime-tree-ensemble"),
        ("ridge", "regression", "diabetes", {}, "numpy-linear"),
        ("linear_regression", "regression", "diabetes", {}, "numpy-linear"),
        ("hist_gradient_boosting", "classification", "breast_cancer", {"max_iter": 40}, BOOSTED),
        ("hist_gradient_boosting", "classification", "iris", {"max_iter": 25}, BOOSTED),
        ("hist_gradient_boosting", "classification", "iris_names", {"max_iter": 10}, BOOSTED),
        ("hist_gradient_boosting", "regression", "diabetes", {"max_iter": 40}, BOOSTED),
        ("hist_gradient_boosting", "regression", "diabetes", {"max_iter": 20, "loss": "poisson"}, BOOSTED),
    ],
)
def test_every_compiled_estimator_round_trips(
    estimator: str, task: Task, dataset: str, params: dict[str, Any], kind: str, tmp_path: Path
) -> None:
    pipeline, reference = _fitted(estimator, task, dataset, **params)
    exported = export_runtime(pipeline, _classes(pipeline, task), reference, tmp_path)
    assert exported.runtime.name == kind, exported.reason
    loaded = load_runtime(tmp_path)
    assert loaded is not None and loaded.runtime.name == kind
    assert "reproduces scikit-learn" in loaded.reason
    fresh = np.random.default_rng(2).normal(reference.mean(0), reference.std(0), (500, reference.shape[1]))
    got = loaded.runtime.predict(fresh)
    if task == "classification":
        assert list(got.values) == list(pipeline.predict(fresh))
        assert got.probabilities is not None
        np.testing.assert_allclose(got.probabilities, pipeline.predict_proba(fresh), rtol=0, atol=1e-9)
    else:
        np.testing.assert_allclose(got.values, pipeline.predict(fresh), rtol=0, atol=1e-9)


@pytest.mark.parametrize("rows", [1, 511, 512, 513, 1000, 10_001])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(("center", "scale"), [(True, True), (True, False), (False, True)])
def test_the_linear_runtime_standardises_rows_exactly_as_scikit_learn(
    rows: int, order: Literal["C", "F"], center: bool, scale: bool
) -> None:
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(rows)
    scaler = StandardScaler(with_mean=center, with_std=scale).fit(rng.normal(3, 2, (500, 20)))
    mean = scaler.mean_ if center else None
    # An identity matrix for coefficients: the scores are the standardised rows, exactly.
    runtime = LinearRuntime(np.eye(20), np.zeros(20), mean, scaler.scale_, None)
    X = np.asarray(rng.normal(3, 2, (rows, 20)), order=order)
    sent = X.copy()
    assert np.array_equal(runtime.predict(X).values, scaler.transform(X))
    assert np.array_equal(X, sent)  # the caller's rows are left as they were


def test_models_without_a_faster_runtime_write_nothing(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    X, y = _dataset("iris")
    # Categorical splits (bitsets) have no TreeEnsemble form here: compiled, then refused.
    categorical = Pipeline([("model", HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]))])
    other = Pipeline([("model", DecisionTreeClassifier(random_state=0))])
    for pipeline, reason in (
        (categorical, "categorical features are served by scikit-learn"),
        (other, "no faster runtime for DecisionTreeClassifier"),
    ):
        pipeline.fit(X, y)
        target = tmp_path / type(pipeline.steps[0][1]).__name__
        target.mkdir()
        choice = export_runtime(pipeline, _classes(pipeline, "classification"), X.to_numpy(), target)
        assert isinstance(choice.runtime, SklearnRuntime)
        assert reason in choice.reason
        assert not (target / RUNTIME_SUBDIR).exists()
        assert load_runtime(target) is None


def test_a_runtime_that_disagrees_at_training_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.runtime_bundle as bundle

    pipeline, reference = _fitted("random_forest", "classification", "iris", n_estimators=10)
    other, _ = _fitted("random_forest", "classification", "iris", n_estimators=10, max_depth=1)
    compile_forest = bundle._compile_forest
    monkeypatch.setattr(bundle, "_compile_forest", lambda _pipeline, c: compile_forest(other, c))
    choice = export_runtime(pipeline, _classes(pipeline, "classification"), reference, tmp_path)
    assert isinstance(choice.runtime, SklearnRuntime)
    assert "onnxruntime-tree-ensemble refused at training" in choice.reason
    assert "reference labels differ" in choice.reason
    assert not (tmp_path / RUNTIME_SUBDIR).exists()


def _rewrite_reference(folder: Path, change: Any) -> None:
    path = folder / "model" / RUNTIME_SUBDIR / "reference.npz"
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def test_a_bundle_that_does_not_reproduce_its_record_falls_back_to_scikit_learn(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    release = releases["rf"]
    folder = copy_release(release, tmp_path)

    def flip_one_label(arrays: dict[str, np.ndarray]) -> None:
        arrays["values"][7] = 1 - arrays["values"][7]

    _rewrite_reference(folder, flip_one_label)
    with pytest.raises(BundleError, match="1 of 2005 reference labels differ"):
        load_runtime(folder / "model")
    # Signed off by its checksum, the release still serves, on scikit-learn, and says why.
    loaded = load_release(str(folder), directory_checksum(folder / "model"), None)
    assert loaded.runtime.name == "scikit-learn"
    assert "precompiled runtime refused" in loaded.runtime_reason
    rows = release.frame.to_numpy()[:50]
    assert list(loaded.runtime.predict(rows).values) == list(release.pipeline.predict(rows))


def test_a_bundle_needing_pickle_is_refused(releases: dict[str, Release], tmp_path: Path) -> None:
    folder = copy_release(releases["lr"], tmp_path)

    def objects(arrays: dict[str, np.ndarray]) -> None:
        arrays["values"] = arrays["values"].astype(object)

    _rewrite_reference(folder, objects)
    with pytest.raises(BundleError, match=r"unusable.*pickle"):
        load_runtime(folder / "model")


def test_a_modified_bundle_fails_the_release_checksum(releases: dict[str, Release], tmp_path: Path) -> None:
    from model.server.loader import LoadError

    folder = copy_release(releases["lr"], tmp_path)
    _rewrite_reference(folder, lambda arrays: arrays["probabilities"].__imul__(0.5))
    with pytest.raises(LoadError, match="checksum"):
        load_release(str(folder), None, None)


def test_a_release_without_a_bundle_serves_scikit_learn(releases: dict[str, Release], tmp_path: Path) -> None:
    folder = copy_release(releases["lr"], tmp_path, without_runtime=True)
    loaded = load_release(str(folder), directory_checksum(folder / "model"), None)
    assert loaded.runtime.name == "scikit-learn"
    assert loaded.runtime_reason == "the release has no precompiled runtime"


def _record_libraries(folder: Path, **versions: str) -> None:
    record = json.loads((folder / "release.json").read_text())
    record["libraries"].update(versions)
    (folder / "release.json").write_text(json.dumps(record))


def test_scikit_learn_skew_is_refused_unless_the_precompiled_runtime_checks_out(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    """Deserialising a pipeline with another scikit-learn than training's is refused, by name."""
    from importlib.metadata import version

    from model.server.loader import LoadError

    here = version("scikit-learn")
    plain = copy_release(releases["lr"], tmp_path / "plain", without_runtime=True)
    _record_libraries(plain, **{"scikit-learn": "1.6.1"})
    with pytest.raises(LoadError) as info:
        load_release(str(plain), directory_checksum(plain / "model"), None)
    message = str(info.value)
    assert f"scikit-learn 1.6.1 at training, {here} here" in message
    assert "the release has no precompiled runtime" in message
    # With its precompiled runtime, checked here against its reference predictions, it serves.
    compiled = copy_release(releases["lr"], tmp_path / "compiled")
    _record_libraries(compiled, **{"scikit-learn": "1.6.1"})
    loaded = load_release(str(compiled), directory_checksum(compiled / "model"), None)
    assert loaded.runtime.name != "scikit-learn"


def test_the_version_stored_beside_the_release_is_reported(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    from model.artifact import Registration

    folder = copy_release(releases["rf"], tmp_path)
    registration = Registration(releases["rf"].model_name, releases["rf"].release_id, "41")
    (folder / "registration.json").write_text(registration.to_json())
    assert load_release(str(folder), None, None).model_version == "41"
    assert load_release(str(folder), None, "7").model_version == "7"  # MLOPS_MODEL_VERSION wins
    other = Registration(releases["rf"].model_name, "0" * 12, "99")
    (folder / "registration.json").write_text(other.to_json())
    assert load_release(str(folder), None, None).model_version == releases["rf"].release_id


def test_string_labels_are_served_as_strings(workdir: Path, registry: RegistrySettings) -> None:
    from sklearn.datasets import load_iris
    from starlette.testclient import TestClient

    from model.server import ServerSettings, create_app
    from model.spec import TrainingSpec
    from model.train import train_release
    from tests.server.conftest import wait_ready

    iris = load_iris(as_frame=True)
    frame = iris.data.set_axis([f"x{i}" for i in range(4)], axis=1)
    frame["species"] = iris.target_names[iris.target]
    csv = workdir / "iris-names.csv"
    frame.to_csv(csv, index=False)
    spec = TrainingSpec(
        model_name="server-iris-names",
        dataset=str(csv),
        target="species",
        task="classification",
        estimator="random_forest",
        params={"n_estimators": 15},
    )
    folder = Path(train_release(spec, registry, workdir, log=lambda _m: None).model_uri).parent
    with TestClient(create_app(ServerSettings(model_uri=str(folder), grpc_port=0))) as client:
        wait_ready(client)
        assert client.get("/version").json()["runtime"] == "onnxruntime-tree-ensemble"
        rows = frame.drop(columns="species").iloc[[0, 60, 120]].to_numpy().tolist()
        answer = client.post("/invocations?probabilities=true", json={"instances": rows}).json()
    assert answer["predictions"] == ["setosa", "versicolor", "virginica"]
    assert len(answer["probabilities"]) == 3


@pytest.mark.slow
def test_gradient_boosting_serves_precompiled_and_falls_back_safely(
    releases: dict[str, Release], process_factory: Any, tmp_path: Path
) -> None:
    """The boosted-trees runtime needs no scikit-learn; without it the release still loads through
    skops' narrowed trusted list (which must know the classifier's LabelEncoder)."""
    import httpx

    from tests.server.conftest import expected, split_body, wait_live, wait_ready

    release = releases["hgb"]
    frame = release.frame.sample(40, random_state=3)
    without_bundle = copy_release(release, tmp_path, without_runtime=True)
    for folder, runtime in ((release.folder, BOOSTED), (without_bundle, "scikit-learn")):
        sha = [] if runtime == BOOSTED else ["--model-sha256", directory_checksum(without_bundle / "model")]
        server = process_factory(str(folder), *sha)
        wait_live(server)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            wait_ready(http)
            assert http.get("/version").json()["runtime"] == runtime, server.log_text()
            response = http.post("/invocations?probabilities=true", json=split_body(frame))
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected(release, frame)
        np.testing.assert_allclose(
            response.json()["probabilities"], release.pipeline.predict_proba(frame), rtol=0, atol=1e-9
        )
        mapped = Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert ("/sklearn/" in mapped) == (runtime == "scikit-learn")
        assert server.stop() == 0
