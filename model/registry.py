"""Everything that talks to MLflow: experiments, runs, artifact upload and model versions."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.spec import RegistrySettings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "ExistingRelease",
    "RegistryError",
    "champion_metrics",
    "connect",
    "ensure_experiment",
    "find_release",
    "register_version",
    "upload_release",
]

RELEASE_TAG = "mlops.release_id"


class RegistryError(RuntimeError):
    """The tracking server or artifact store refused or could not be reached."""


@dataclass(frozen=True)
class ExistingRelease:
    version: str
    source: str
    run_id: str | None


def connect(settings: RegistrySettings) -> MlflowClient:
    """A client for a resolved registry (see `RegistrySettings.resolved`)."""
    import mlflow
    from mlflow import MlflowClient

    if settings.s3_endpoint_url:
        # MLflow's S3 artifact repository reads the endpoint from the environment only.
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.artifact_root and "://" not in settings.artifact_root:
        Path(settings.artifact_root).mkdir(parents=True, exist_ok=True)
    if settings.tracking_uri and settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    uri = settings.tracking_uri
    if uri is None:
        raise RegistryError("no tracking URI: resolve the registry settings first")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, settings: RegistrySettings) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    # A remote server chooses (or proxies) run artifact storage itself; the embedded
    # registry keeps run artifacts next to release artifacts instead of ./mlruns.
    location = None
    if settings.is_embedded and settings.artifact_root:
        root = settings.artifact_root
        location = f"{root.rstrip('/')}/_runs/{name}" if "://" in root else Path(root, "_runs", name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def find_release(client: MlflowClient, model_name: str, release_id: str) -> ExistingRelease | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(
            f"name = '{model_name}' and tags.`{RELEASE_TAG}` = '{release_id}'"
        )
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return None
        raise
    if not versions:
        return None
    first = min(versions, key=lambda v: int(v.version))
    return ExistingRelease(str(first.version), str(first.source), first.run_id)


def champion_metrics(
    client: MlflowClient, model_name: str, alias: str
) -> tuple[str, dict[str, float]] | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    if not version.run_id:
        return None
    return str(version.version), dict(client.get_run(version.run_id).data.metrics)


def upload_release(local_dir: Path, uri: str) -> None:
    """Copy a release folder to its URI and check every file arrived."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    target = uri if "://" in uri else str(Path(uri).resolve())
    try:
        repo = get_artifact_repository(target)
        repo.log_artifacts(str(local_dir))
        uploaded = {_rel(f) for f in _list_all(repo, "")}
    except Exception as exc:  # boto3 and MLflow raise many unrelated types here
        raise RegistryError(
            f"could not upload release artifacts to {uri}: {type(exc).__name__}: {exc}"
        ) from exc
    expected = {p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()}
    missing = sorted(expected - uploaded)
    if missing:
        raise RegistryError(f"artifact upload to {uri} is incomplete; missing: {', '.join(missing)}")


def _list_all(repo: Any, path: str) -> list[str]:
    out: list[str] = []
    for info in repo.list_artifacts(path or None):
        if info.is_dir:
            out.extend(_list_all(repo, info.path))
        else:
            out.append(info.path)
    return out


def _rel(path: str) -> str:
    return path.lstrip("/")


def register_version(
    client: MlflowClient,
    model_name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    timeout_s: float = 120.0,
) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(model_name)
        version = client.create_model_version(model_name, source, run_id=run_id, tags=tags)
    except MlflowException as exc:
        raise RegistryError(f"could not register {model_name} from {source}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while version.status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise RegistryError(f"{model_name} version {version.version} still pending after {timeout_s}s")
        time.sleep(0.5)
        version = client.get_model_version(model_name, version.version)
    if version.status != "READY":
        raise RegistryError(f"{model_name} version {version.version} is {version.status}")
    return version
