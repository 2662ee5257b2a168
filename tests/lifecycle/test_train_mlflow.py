"""The release lifecycle end to end against a real MLflow server with artifacts on real S3."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from model.artifact import Registration, ReleaseMetadata, load_sklearn_model
from model.data import load_dataset, split_dataset
from model.estimators import build_pipeline
from model.registry import RELEASE_TAG, RegistryError
from model.spec import RegistrySettings, TrainingSpec
from model.train import GateFailure, train_release
from tests.services import S3Service, start_seaweedfs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _spec(**overrides: object) -> TrainingSpec:
    base: dict[str, object] = {
        "model_name": f"bc-{uuid.uuid4().hex[:8]}",
        "dataset": "sklearn:breast_cancer",
        "target": "target",
        "task": "classification",
        "estimator": "random_forest",
        "seed": 3,
        "params": {"n_estimators": 20, "max_depth": 5},
        "gates": {"thresholds": {"accuracy": {"min": 0.85}}},
    }
    return TrainingSpec.model_validate({**base, **overrides})


@pytest.fixture
def registry(mlflow_server: Any, s3_env: S3Service) -> RegistrySettings:
    return RegistrySettings(
        tracking_uri=mlflow_server.tracking_uri,
        artifact_root=mlflow_server.artifact_root,
        s3_endpoint_url=s3_env.endpoint_url,
    )


def _versions(registry: RegistrySettings, name: str) -> list[Any]:
    return MlflowClient(registry.tracking_uri, registry.tracking_uri).search_model_versions(
        f"name = '{name}'"
    )


def test_train_register_and_load_back(registry: RegistrySettings, s3_env: S3Service, tmp_path: Path) -> None:
    spec = _spec()
    outcome = train_release(spec, registry, tmp_path, log=lambda _: None)
    assert outcome.status == "registered" and outcome.version == "1"
    bucket = registry.artifact_root.removeprefix("s3://")  # type: ignore[union-attr]
    assert outcome.model_uri == f"s3://{bucket}/{spec.model_name}/{outcome.release_id}/model"

    # The artifact objects are in the S3 bucket, under the release's immutable prefix.
    listed = s3_env.client().list_objects_v2(Bucket=bucket, Prefix=f"{spec.model_name}/{outcome.release_id}/")
    keys = {obj["Key"].split(f"{outcome.release_id}/", 1)[1] for obj in listed["Contents"]}
    assert {"model/MLmodel", "model/model.skops", "release.json", "reference_profile.json"} <= keys

    # Lineage tags on the version.
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    version = client.get_model_version(spec.model_name, outcome.version)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert version.tags[RELEASE_TAG] == outcome.release_id
    assert version.tags["mlops.dataset_hash"] == load_dataset(spec.dataset).content_hash
    assert version.tags["mlops.code_hash"] == outcome.code_hash
    if head.returncode == 0:
        assert version.tags["mlops.git_commit"] == head.stdout.strip()
    assert version.tags["mlops.runtime.scikit-learn"] == outcome.runtime["scikit-learn"]
    assert client.get_model_version_by_alias(spec.model_name, "champion").version == "1"
    assert client.get_model_version_by_alias(spec.model_name, "candidate").version == "1"
    assert outcome.gates["champion"] == "none"  # the first release had nothing to compare with
    # The registered version is stored beside the release for readers without MLflow access.
    registration = s3_env.client().get_object(
        Bucket=bucket, Key=f"{spec.model_name}/{outcome.release_id}/registration.json"
    )
    assert Registration.from_json(registration["Body"].read().decode()) == Registration(
        spec.model_name, outcome.release_id, "1"
    )
    run_artifacts = {a.path for a in client.list_artifacts(str(outcome.run_id))}
    assert {"gates.json", "reference_profile.json"} <= run_artifacts

    # Loads back (our trusted list, checksum verified) and predicts exactly what training fitted.
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{spec.model_name}/1", dst_path=str(tmp_path / "dl"))
    )
    release = Path(
        mlflow.artifacts.download_artifacts(
            outcome.model_uri.rsplit("/", 1)[0] + "/release.json", dst_path=str(tmp_path / "meta")
        )
    )
    metadata = ReleaseMetadata.from_json(release.read_text())
    assert metadata.gates_passed and metadata.release_id == outcome.release_id
    loaded = load_sklearn_model(local, spec.estimator, spec.task, metadata.model_sha256)
    split = split_dataset(load_dataset(spec.dataset), spec.target, spec.test_size, spec.seed, stratify=True)
    refit = build_pipeline(spec.estimator, spec.task, spec.params, spec.seed).fit(
        split.X_train, split.y_train
    )
    np.testing.assert_array_equal(loaded.predict_proba(split.X_test), refit.predict_proba(split.X_test))
    # MLflow's own loader works on the same version (so MLflow tooling keeps working).
    pyfunc = mlflow.pyfunc.load_model(f"models:/{spec.model_name}/1")
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(split.X_test)), refit.predict(split.X_test))


def test_same_release_twice_gives_one_version(registry: RegistrySettings, tmp_path: Path) -> None:
    spec = _spec()
    first = train_release(spec, registry, tmp_path, log=lambda _: None)
    again = train_release(spec, registry, tmp_path, log=lambda _: None)
    assert again.status == "exists"
    assert (again.version, again.release_id, again.model_uri) == (
        first.version,
        first.release_id,
        first.model_uri,
    )
    assert len(_versions(registry, spec.model_name)) == 1


def test_failed_gate_registers_nothing(registry: RegistrySettings, tmp_path: Path) -> None:
    spec = _spec(gates={"thresholds": {"accuracy": {"min": 0.999}}})
    with pytest.raises(GateFailure) as info:
        train_release(spec, registry, tmp_path, log=lambda _: None)
    assert "accuracy = 0." in str(info.value) and "must be >= min 0.999: FAILED" in str(info.value)
    assert _versions(registry, spec.model_name) == []
    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(info.value.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlops.gates"] == "failed"
    assert "gates.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_champion_regression_blocks_a_worse_release(registry: RegistrySettings, tmp_path: Path) -> None:
    name = f"champ-{uuid.uuid4().hex[:8]}"
    gates = {"max_regression": {"accuracy": 0.0, "log_loss": 0.0}}
    strong = _spec(model_name=name, gates=gates)
    train_release(strong, registry, tmp_path, log=lambda _: None)
    weak = _spec(model_name=name, gates=gates, params={"n_estimators": 1, "max_depth": 1})
    with pytest.raises(GateFailure, match=r"champion minus allowed regression\): FAILED") as info:
        train_release(weak, registry, tmp_path, log=lambda _: None)
    assert info.value.report.champion == "version 1"
    assert info.value.report.as_dict()["champion"] == "version 1"
    assert len(_versions(registry, name)) == 1


def test_s3_down_before_upload_is_a_clear_error_and_registers_nothing(
    registry: RegistrySettings, tmp_path: Path
) -> None:
    dead = start_seaweedfs(Path(tempfile.mkdtemp(prefix="weed-dead-")))
    bucket = dead.make_bucket("gone")
    dead.stop()
    spec = _spec()
    broken = registry.model_copy(
        update={"artifact_root": f"s3://{bucket}", "s3_endpoint_url": dead.endpoint_url}
    )
    with pytest.raises(RegistryError) as info:
        train_release(spec, broken, tmp_path, log=lambda _: None)
    message = str(info.value)
    assert f"uploading release artifacts to s3://{bucket}/{spec.model_name}/" in message
    assert dead.endpoint_url.split("//")[1] in message or "Could not connect" in message
    assert _versions(registry, spec.model_name) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"estimator": "svm"}, "estimator: unknown estimator 'svm' for task 'classification'; allowed:"),
        ({"params": {"n_trees": 5}}, "params: unknown parameter(s) 'n_trees' for estimator 'random_forest'"),
        ({"dataset": "data/absent.csv"}, "dataset file data/absent.csv does not exist"),
        ({"target": "diagnosis"}, "target column 'diagnosis' is not in dataset sklearn:breast_cancer"),
    ],
)
def test_bad_specs_fail_clearly_from_the_command_line(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    spec = {**_spec().model_dump(mode="json"), **change}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [sys.executable, "-m", "model.train", "--spec", str(path), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert expected in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
