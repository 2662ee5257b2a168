"""`mlops delete-version` against a real MLflow server: a version an alias or a stack file points
at is refused, naming who points at it; any other is deleted, and its artifacts stay."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from infra.cli import app
from model.registry import RELEASE_TAG, find_version
from tests.services import MlflowService, S3Service, free_port

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
SHA = "9f2c1e4b7a6d5c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b"


def _pin(model: str, release_id: str, version: str) -> dict[str, str]:
    return {
        "model_name": model,
        "release_id": release_id,
        "model_version": version,
        "model_sha256": SHA,
        "gates": "passed",
    }


def _stack(root: Path, name: str, config: dict[str, Any]) -> None:
    config = {"mlops:artifacts": {"bucket": "releases"}, **config}
    (root / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))


@pytest.fixture
def project(
    mlflow_server: MlflowService, s3_env: S3Service, tmp_path: Path
) -> tuple[Path, str, dict[str, str]]:
    """Stacks around one registry: dev trains model M; `live` serves version 3 of it and a canary
    (release of version 5, pinned under another number); `mirror` pins version 4 in another
    registry; `unknown` pins version 6 in a registry it does not name. Versions 1-6 exist, with
    `champion` on 1 and `candidate` on 2, each with a release folder in the store."""
    model = f"del-{uuid.uuid4().hex[:8]}"
    rids = {str(n): uuid.uuid4().hex[:12] for n in range(1, 7)}
    here = {"host_tracking_uri": mlflow_server.tracking_uri}
    elsewhere = {"host_tracking_uri": f"http://127.0.0.1:{free_port()}"}
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    training = {
        "model_name": model,
        "dataset": "sklearn:breast_cancer",
        "target": "target",
        "task": "classification",
        "estimator": "logistic_regression",
    }
    _stack(tmp_path, "dev", {"mlops:training": training, "mlops:tracking": here})
    canary = {"weight": 10, "release": _pin(model, rids["5"], "55")}
    live = {
        "mlops:release": _pin(model, rids["3"], "3"),
        "mlops:tracking": here,
        "mlops:serving": {"canary": canary},
    }
    _stack(tmp_path, "live", live)
    _stack(tmp_path, "mirror", {"mlops:release": _pin(model, rids["1"], "4"), "mlops:tracking": elsewhere})
    _stack(tmp_path, "unknown", {"mlops:release": _pin(model, uuid.uuid4().hex[:12], "6")})

    client = MlflowClient(mlflow_server.tracking_uri, mlflow_server.tracking_uri)
    client.create_registered_model(model)
    bucket = mlflow_server.artifact_root.removeprefix("s3://")
    for number, rid in rids.items():
        s3_env.client().put_object(Bucket=bucket, Key=f"{model}/{rid}/release.json", Body=b"{}")
        version = client.create_model_version(
            model, f"{mlflow_server.artifact_root}/{model}/{rid}/model", tags={RELEASE_TAG: rid}
        )
        assert version.version == number
    client.set_registered_model_alias(model, "champion", "1")
    client.set_registered_model_alias(model, "candidate", "2")
    return tmp_path, model, rids


def _delete(root: Path, version: str, *extra: str, answer: str | None = None) -> Any:
    args = ["delete-version", "--stack", "dev", "--version", version, "--workdir", str(root), *extra]
    return CliRunner().invoke(app, args, input=answer)


def test_delete_version_refuses_what_is_pointed_at_and_keeps_artifacts(
    project: tuple[Path, str, dict[str, str]], mlflow_server: MlflowService, s3_env: S3Service
) -> None:
    root, model, rids = project
    client = MlflowClient(mlflow_server.tracking_uri, mlflow_server.tracking_uri)
    refusals = {
        "1": "alias 'champion' points at it",
        "2": "alias 'candidate' points at it",
        "3": f"Pulumi.live.yaml pins it (mlops:release: release {rids['3']}, version 3)",
        "5": f"Pulumi.live.yaml pins it (mlops:serving.canary.release: release {rids['5']}, version 55)",
        "6": "Pulumi.unknown.yaml pins it (mlops:release: release",
    }
    for version, who in refusals.items():
        result = _delete(root, version, "--yes")
        output = " ".join(result.output.split())
        assert result.exit_code == 1, output
        assert f"refusing to delete {model} version {version} (release {rids[version]})" in output
        assert who in output, output
        assert find_version(client, model, version) is not None
    assert "its registry is not known here" in " ".join(_delete(root, "6", "--yes").output.split())

    # Version 4: `mirror` pins a version 4 of another registry, which is not this one.
    declined = _delete(root, "4", answer="n\n")
    assert declined.exit_code == 1 and find_version(client, model, "4") is not None
    deleted = _delete(root, "4", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted {model} version 4 (release {rids['4']})" in " ".join(deleted.output.split())
    assert find_version(client, model, "4") is None
    bucket = mlflow_server.artifact_root.removeprefix("s3://")
    kept = s3_env.client().list_objects_v2(Bucket=bucket, Prefix=f"{model}/{rids['4']}/")
    assert [o["Key"] for o in kept["Contents"]] == [f"{model}/{rids['4']}/release.json"]

    again = _delete(root, "4", "--yes")
    assert again.exit_code == 1 and f"{model} has no version 4 at" in " ".join(again.output.split())
    assert _delete(root, "four", "--yes").exit_code == 2
    # Once the alias moves away, the version it left is free to go.
    client.set_registered_model_alias(model, "candidate", "1")
    assert _delete(root, "2", "--yes").exit_code == 0
    assert sorted(v.version for v in client.search_model_versions(f"name = '{model}'")) == [
        "1",
        "3",
        "5",
        "6",
    ]
