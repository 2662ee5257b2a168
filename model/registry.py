"""Everything that talks to MLflow: experiments, runs, model versions, aliases.

The release folder itself is published by `model.release_store` (checked, then committed).

Every failure of MLflow or of the artifact store surfaces as `RegistryError` (exit code 3,
retried by the training Job), never as a bare MLflow or boto3 exception that would read like
a crash, and never as "nothing there": only a registry that answered "does not exist" means
that something is absent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from model.artifact import REGISTRATION_FILE, Registration
from model.errors import RegistryError
from model.spec import RegistrySettings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CANDIDATE_ALIAS",
    "RELEASE_TAG",
    "Champion",
    "ExistingRelease",
    "RegistryError",
    "alias_version",
    "bound_http_retries",
    "connect",
    "ensure_experiment",
    "find_champion",
    "find_release",
    "find_version",
    "register_version",
    "registry_call",
    "set_alias",
    "write_registration",
]

INTERACTIVE_HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def bound_http_retries() -> None:
    """MLflow retries a failing request for minutes by default (seven retries, doubling waits);
    `pulumi up` and a command someone waits on should fail in seconds, naming the registry.
    Variables the user set win."""
    for key, value in INTERACTIVE_HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


@contextmanager
def client_environment(values: Mapping[str, str]) -> Iterator[None]:
    """MLflow's client reads its settings and credentials from the environment on each call:
    set `values` for one block, then restore what was there (not thread-safe on its own)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


RELEASE_TAG = "mlops.release_id"
CANDIDATE_ALIAS = "candidate"
"""The alias training sets on a version that passed its gates; `champion` moves after rollout."""
_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
T = TypeVar("T")


def _service_errors() -> tuple[type[BaseException], ...]:
    """What MLflow, its HTTP client, boto3 and the file system raise when a service fails."""
    import requests
    from botocore.exceptions import BotoCoreError, ClientError
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, BotoCoreError, ClientError, OSError)


@contextmanager
def registry_call(what: str) -> Iterator[None]:
    """Turn a failure of MLflow or of the store underneath into a RegistryError (a bug stays a crash)."""
    try:
        yield
    except RegistryError:
        raise
    except _service_errors() as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise RegistryError(f"{what} failed: {type(exc).__name__}: {message}") from exc


def _unless_absent(what: str, call: Callable[[], T]) -> T | None:
    """call(), or None when the registry answered that the thing does not exist."""
    from mlflow.exceptions import MlflowException

    with registry_call(what):
        try:
            return call()
        except MlflowException as exc:
            if exc.error_code == _DOES_NOT_EXIST:
                return None
            raise


def alias_version(client: MlflowClient, model_name: str, alias: str, what: str) -> str | None:
    """The version `alias` names; None when the model or the alias does not exist."""
    model = _unless_absent(what, lambda: client.get_registered_model(model_name))
    version = (model.aliases or {}).get(alias) if model is not None else None
    return None if version is None else str(version)


def find_version(client: MlflowClient, model_name: str, version: str) -> ModelVersion | None:
    """The model version (with its aliases and tags); None when the registry says it does not exist."""
    return _unless_absent(
        f"reading {model_name} version {version} at {client.tracking_uri}",
        lambda: client.get_model_version(model_name, version),
    )


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
    with registry_call(f"looking up experiment {name} in {client.tracking_uri}"):
        experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    # A remote server chooses (or proxies) run artifact storage itself; the embedded
    # registry keeps run artifacts next to release artifacts instead of ./mlruns.
    location = None
    if settings.is_embedded and settings.artifact_root:
        root = settings.artifact_root
        location = f"{root.rstrip('/')}/_runs/{name}" if "://" in root else Path(root, "_runs", name).as_uri()
    with registry_call(f"creating experiment {name} in {client.tracking_uri}"):
        return str(client.create_experiment(name, artifact_location=location))


def find_release(client: MlflowClient, model_name: str, release_id: str) -> ExistingRelease | None:
    versions = _unless_absent(
        f"looking up release {release_id} of {model_name} in {client.tracking_uri}",
        lambda: client.search_model_versions(
            f"name = '{model_name}' and tags.`{RELEASE_TAG}` = '{release_id}'"
        ),
    )
    if not versions:
        return None
    first = min(versions, key=lambda v: int(v.version))
    return ExistingRelease(str(first.version), str(first.source), first.run_id)


@dataclass(frozen=True)
class Champion:
    version: str
    metrics: dict[str, float]


def find_champion(client: MlflowClient, model_name: str, alias: str) -> Champion | None:
    """The version under `alias` and its run's metrics; None only when there is no such version.

    Fails closed: a registry that cannot be asked, or a champion whose run cannot be read, is
    a RegistryError, never "no champion", which would skip the regression gates.
    """
    where = f"{model_name}@{alias} in {client.tracking_uri}"
    version = alias_version(client, model_name, alias, f"looking up the champion {where}")
    if version is None:
        return None
    with registry_call(f"reading the champion {where} (version {version})"):
        run_id = client.get_model_version(model_name, str(version)).run_id
        if not run_id:
            raise RegistryError(f"champion {where} is version {version}, which has no run with metrics")
        return Champion(str(version), dict(client.get_run(run_id).data.metrics))


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    with registry_call(f"pointing {model_name}@{alias} at version {version} in {client.tracking_uri}"):
        client.set_registered_model_alias(model_name, alias, version)


def write_registration(uri: str, registration: Registration) -> None:
    """Store registration.json in the release folder, unless an identical one is there already."""
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    target = uri if "://" in uri else str(Path(uri).resolve())
    with registry_call(f"writing {REGISTRATION_FILE} to {uri}"):
        repo = get_artifact_repository(target)
        with tempfile.TemporaryDirectory(prefix="registration-") as tmp:
            if REGISTRATION_FILE in {_rel(f.path) for f in repo.list_artifacts(None)}:
                existing = Path(repo.download_artifacts(REGISTRATION_FILE, tmp)).read_text()
                if Registration.from_json(existing) == registration:
                    return
            path = Path(tmp) / REGISTRATION_FILE
            path.write_text(registration.to_json())
            repo.log_artifact(str(path))


def _rel(path: str) -> str:
    return path.lstrip("/")


def register_version(
    client: MlflowClient,
    model_name: str,
    source: str,
    run_id: str | None,
    tags: dict[str, str],
    timeout_s: float = 120.0,
) -> ModelVersion:
    where = f"registering {model_name} from {source} in {client.tracking_uri}"
    if _unless_absent(where, lambda: client.get_registered_model(model_name)) is None:
        with registry_call(where):
            client.create_registered_model(model_name)
    with registry_call(where):
        version = client.create_model_version(model_name, source, run_id=run_id, tags=tags)
        deadline = time.monotonic() + timeout_s
        while version.status == "PENDING_REGISTRATION":
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"{model_name} version {version.version} still pending after {timeout_s}s"
                )
            time.sleep(0.5)
            version = client.get_model_version(model_name, version.version)
    if version.status != "READY":
        raise RegistryError(f"{model_name} version {version.version} is {version.status}")
    return version
