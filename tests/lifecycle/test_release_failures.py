"""How a release fails, through the training Job's own command (`python -m model.train`), against a
real MLflow server and real S3: one exit code per cause, nothing registered, messages that say
what to do. The training Job relies on exactly these codes: only a registry or store failure is
retried (`--retries`), inside its pod."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from model.errors import ExitCode
from model.lineage import plan_release
from model.registry import RegistryError, find_champion
from model.spec import RegistrySettings, TrainingSpec
from model.train import ReleaseOptions, train_release
from tests.services import MlflowService, S3Service, free_port, start_mlflow
from tests.specs import quick_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _spec(**overrides: Any) -> TrainingSpec:
    return quick_spec("fail", **overrides)


def _env(mlflow: MlflowService, s3: S3Service) -> dict[str, str]:
    return {
        **os.environ,
        **s3.env(),
        "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
        "MLOPS_ARTIFACT_ROOT": mlflow.artifact_root,
        # Fail fast when MLflow is gone: the default retries take minutes.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }


def _train_command(spec_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "model.train", "--spec", str(spec_path), "--json", *extra]


def _write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else json.dumps(data))
    return path


def _versions(tracking_uri: str, name: str) -> list[Any]:
    return MlflowClient(tracking_uri, tracking_uri).search_model_versions(f"name = '{name}'")


@pytest.fixture
def registry(mlflow_server: MlflowService, s3_env: S3Service) -> RegistrySettings:
    return RegistrySettings(
        tracking_uri=mlflow_server.tracking_uri,
        artifact_root=mlflow_server.artifact_root,
        s3_endpoint_url=s3_env.endpoint_url,
    )


def test_a_different_dataset_in_the_job_is_a_mismatch_and_registers_nothing(
    mlflow_server: MlflowService, s3: S3Service, tmp_path: Path
) -> None:
    """The program planned one version of the data; the pod reads another under the same URI."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    data = tmp_path / "bc.csv"
    frame.to_csv(data, index=False)
    spec = _spec(dataset=str(data))
    planned = plan_release(spec)
    expected = _write(tmp_path / "expected.json", planned.inputs.to_dict())
    frame.iloc[:-5].to_csv(data, index=False)  # what the pod finds
    in_pod = plan_release(spec)

    result = subprocess.run(
        _train_command(
            _write(tmp_path / "spec.yaml", spec.model_dump(mode="json")), "--expected", str(expected)
        ),
        env=_env(mlflow_server, s3),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == ExitCode.RELEASE_MISMATCH, result.stderr
    assert (
        f"this Job computes release {in_pod.release_id}, but `pulumi preview` planned release "
        f"{planned.release_id}: dataset hash {in_pod.inputs.dataset_hash[:12]} here, "
        f"{planned.inputs.dataset_hash[:12]} expected. Nothing was registered."
    ) in message
    assert "Traceback" not in result.stderr
    assert _versions(mlflow_server.tracking_uri, spec.model_name) == []
    assert MlflowClient(mlflow_server.tracking_uri).get_experiment_by_name(spec.model_name) is None


def test_exit_codes_of_the_training_command(
    mlflow_server: MlflowService, s3: S3Service, tmp_path: Path
) -> None:
    env = _env(mlflow_server, s3)
    cases = {
        ExitCode.GATE_FAILED: _spec(gates={"thresholds": {"accuracy": {"min": 0.9999}}}),
        ExitCode.BAD_CONFIG: _spec(target="diagnosis"),
        ExitCode.OK: _spec(),
    }
    for code, spec in cases.items():
        path = _write(tmp_path / f"{code.name}.yaml", spec.model_dump(mode="json"))
        result = subprocess.run(
            _train_command(path), env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == code, (code, result.stderr)
        assert "Traceback" not in result.stderr
    unreachable = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    path = _write(tmp_path / "ok.yaml", _spec().model_dump(mode="json"))
    result = subprocess.run(
        _train_command(path, "--retries", "2", "--retry-delay", "0.2"),
        env=unreachable,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == ExitCode.REGISTRY, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "registry error (exit 3)" in stderr and "127.0.0.1" in stderr
    # Bounded: the first attempt and two retries, waiting 0.2 s then 0.4 s.
    assert "attempt 1 of 3 failed" in stderr and "retrying in 0 s" in stderr, stderr
    assert "attempt 2 of 3 failed" in stderr and "attempt 3 of 3" not in stderr, stderr


@pytest.fixture
def own_mlflow(s3: S3Service, tmp_path: Path) -> Iterator[MlflowService]:
    """An MLflow server this test may stop."""
    service = start_mlflow(tmp_path / "own-mlflow", s3)
    yield service
    service.stop()


def test_mlflow_stopped_during_training_is_a_registry_failure(
    own_mlflow: MlflowService, s3: S3Service, tmp_path: Path
) -> None:
    """Not a gate failure, and not "no champion": the champion lookup after the fit fails closed."""
    spec = _spec(
        estimator="random_forest",
        params={"n_estimators": 1500, "max_depth": 8},
        gates={"thresholds": {"accuracy": {"min": 0.8}}, "max_regression": {"accuracy": 0.05}},
    )
    path = _write(tmp_path / "spec.yaml", spec.model_dump(mode="json"))
    proc = subprocess.Popen(
        _train_command(path),
        env=_env(own_mlflow, s3),
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    fitting = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("fitting "):
                fitting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert fitting.wait(120), "".join(lines)
    own_mlflow.stop()  # while the forest is being fitted
    assert proc.wait(timeout=300) == ExitCode.REGISTRY, "".join(lines)
    reader.join(timeout=10)
    stderr = " ".join("".join(lines).split())
    assert "registry error (exit 3): looking up the champion" in stderr, stderr
    assert "gate failed" not in stderr and "Traceback" not in stderr


def test_a_registry_that_comes_back_is_retried_into_a_release(
    own_mlflow: MlflowService, s3: S3Service, tmp_path: Path
) -> None:
    """What the training Job does on a registry outage: retry in its pod, and release once it is back."""
    spec = _spec()
    path = _write(tmp_path / "spec.yaml", spec.model_dump(mode="json"))
    own_mlflow.stop()
    proc = subprocess.Popen(
        _train_command(path, "--retries", "6", "--retry-delay", "2"),
        env=_env(own_mlflow, s3),
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    while first and "retrying in" not in first:
        first += proc.stderr.readline()
    assert "attempt 1 of 7 failed" in " ".join(first.split()), first
    own_mlflow.start()  # within its 90 s start bound: the retries wait 2 + 4 + ... + 64 = 126 s
    stdout, rest = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.OK, first + rest
    assert json.loads(stdout)["status"] == "registered"
    assert len(_versions(own_mlflow.tracking_uri, spec.model_name)) == 1


def test_the_champion_lookup_fails_closed(registry: RegistrySettings, tmp_path: Path) -> None:
    """Only "no such model" or "no such alias" means no champion; anything else stops the release."""
    tracking = registry.tracking_uri
    assert tracking is not None
    client = MlflowClient(tracking, tracking)
    name = f"closed-{uuid.uuid4().hex[:8]}"
    assert find_champion(client, name, "champion") is None  # no model yet
    client.create_registered_model(name)
    assert find_champion(client, name, "champion") is None  # no alias yet
    # A champion whose metrics cannot be read: the regression gates cannot be judged.
    orphan = client.create_model_version(name, "s3://nowhere/model")
    client.set_registered_model_alias(name, "champion", orphan.version)
    spec = _spec(model_name=name, gates={"max_regression": {"accuracy": 0.01}})
    with pytest.raises(RegistryError, match=rf"champion {name}@champion .* has no run with metrics"):
        train_release(spec, registry, tmp_path, log=lambda _: None)
    assert [v.version for v in _versions(tracking, name)] == [orphan.version]  # nothing registered
    dead_uri = f"http://127.0.0.1:{free_port()}"
    dead = MlflowClient(dead_uri, dead_uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegistryError, match="looking up the champion"):
        find_champion(dead, name, "champion")


def test_the_job_registers_a_candidate_and_leaves_the_champion(
    registry: RegistrySettings, tmp_path: Path
) -> None:
    """In a cluster the champion moves after the rollout (ModelAlias), not in the Job."""
    tracking = registry.tracking_uri
    assert tracking is not None
    first = _spec()
    train_release(first, registry, tmp_path, log=lambda _: None)  # a local release promotes
    second = _spec(model_name=first.model_name, seed=7)
    outcome = train_release(
        second, registry, tmp_path, log=lambda _: None, options=ReleaseOptions(promote=False)
    )
    client = MlflowClient(tracking, tracking)
    assert client.get_model_version_by_alias(first.model_name, "candidate").version == outcome.version == "2"
    assert client.get_model_version_by_alias(first.model_name, "champion").version == "1"
    assert outcome.gates["champion"] == "version 1"
