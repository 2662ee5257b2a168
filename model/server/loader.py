"""Fetch a release (local path, s3:// or models:/), verify it, and load the runtime it serves on.

A folder without its commit marker (release.json, written last by training) is an upload that
never finished and is refused before anything in it is read; a `models:/<name>@<alias>` is
resolved once, to one version and its immutable folder, so an alias moving during the load
cannot mix two versions.

Imports beyond numpy (onnxruntime, boto3, mlflow, and scikit-learn only when the release has
no usable precompiled runtime) happen inside `load_release`, which the app runs in a worker
thread after the socket is open: liveness answers from process start while the model loads.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from model.artifact import MODEL_SUBDIR, RELEASE_FILE, IncompleteRelease
from model.runtime import Runtime, RuntimeChoice, SklearnRuntime
from model.server.schema import InputSchema

if TYPE_CHECKING:
    from model.artifact import ReleaseMetadata

__all__ = ["LoadError", "LoadedRelease", "fetch_release", "load_release"]

log = logging.getLogger("mlops.server")


class LoadError(RuntimeError):
    """The release cannot be served: unreachable, missing, corrupt, unsafe or unsupported."""


@dataclass(frozen=True)
class LoadedRelease:
    model_name: str
    release_id: str
    model_version: str
    task: str
    estimator: str
    classes: tuple[Any, ...] | None
    schema: InputSchema
    runtime: Runtime
    runtime_reason: str
    example: np.ndarray
    """The model's serving_input_example.json, decoded: the readiness self-test's rows."""
    folder: Path
    """The local release folder (reference profile and records)."""
    target: str | None
    """The target column the release was trained on (its spec's `target`)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(
        exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError
    ):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or error.get("Code") in {
            "Throttling",
            "ThrottlingException",
            "SlowDown",
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
        }
    return False


def _download_s3(uri: str, scratch: Path, retry: RetryPolicy, sleep: Callable[[float], None]) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    from model.data import s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/")
    target = Path(tempfile.mkdtemp(prefix="mlops-release-", dir=scratch))
    delay = retry.first_delay
    for attempt in range(1, retry.attempts + 1):
        try:
            client = s3_client()
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
                keys.extend(item["Key"] for item in page.get("Contents", []))
            if not keys:
                raise LoadError(f"{uri} holds no objects: is the release id right?")
            if f"{prefix}/{RELEASE_FILE}" not in keys:
                raise LoadError(str(IncompleteRelease(prefix.rsplit("/", 1)[-1], uri)))
            for key in keys:
                relative = key[len(prefix) + 1 :]
                if not relative or ".." in Path(relative).parts:
                    continue
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(path))
            return target
        except (BotoCoreError, ClientError) as exc:
            if not _is_transient(exc) or attempt == retry.attempts:
                raise LoadError(
                    f"could not download {uri} (attempt {attempt}/{retry.attempts}): {exc}"
                ) from exc
            wait = min(delay, retry.max_delay) * (0.5 + random.random() / 2)
            log.warning(
                "transient S3 error on attempt %d/%d: %s; retrying in %.1fs",
                attempt,
                retry.attempts,
                exc,
                wait,
            )
            sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


def _resolve_models_uri(uri: str) -> tuple[str, str]:
    """models:/<name>/<version> or models:/<name>@<alias> to (release folder URI, version)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    reference = uri.removeprefix("models:/")
    client = MlflowClient()
    # One call answers version and source together: the rest of the load reads that version's
    # folder, whatever the alias points at by then.
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = reference.partition("/")
            version = client.get_model_version(name, number)
    except MlflowException as exc:
        raise LoadError(f"registry lookup of {uri} failed: {exc.message}") from exc
    source = (version.source or "").rstrip("/")
    if source.startswith("models:/") or not source:
        raise LoadError(f"{uri} points to {source!r}, not to a release folder")
    if source.endswith("/" + MODEL_SUBDIR):
        source = source[: -len(MODEL_SUBDIR) - 1]
    return source, str(version.version)


def fetch_release(
    uri: str,
    scratch: Path,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Path, str | None]:
    """A local release folder for `uri`, and the registry version when the URI names one."""
    version = None
    if uri.startswith("models:/"):
        uri, version = _resolve_models_uri(uri)
    if uri.startswith("s3://"):
        folder = _download_s3(uri, scratch, retry or RetryPolicy(), sleep)
    elif "://" in uri and not uri.startswith("file://"):
        raise LoadError(f"unsupported model URI scheme in {uri!r}; use a path, file://, s3:// or models:/")
    else:
        folder = Path(urlparse(uri).path if uri.startswith("file://") else uri)
    if not (folder / RELEASE_FILE).is_file() and (folder / "MLmodel").is_file():
        folder = folder.parent
    if not (folder / RELEASE_FILE).is_file():
        if (folder / MODEL_SUBDIR).is_dir():
            raise LoadError(str(IncompleteRelease(folder.name, uri)))
        raise LoadError(f"{folder} is not a release folder: {RELEASE_FILE} is missing or unreadable")
    return folder, version


def _import_skops_narrowly() -> None:
    """Import skops with its default-trusted estimators narrowed to the ones we serve.

    skops builds its default trusted list from `sklearn.utils.all_estimators()` at import,
    which walks and imports all of scikit-learn (1-2 s of start-up, more than half of it).
    Listing only the estimators `model/estimators.py` knows (plus the pipeline, scaler and
    trees they are made of) makes the import fast and the loader stricter, not looser.
    """
    if "skops.io" in sys.modules:
        return
    import sklearn.utils
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from model.estimators import ESTIMATORS

    classes = {info.cls for info in ESTIMATORS.values()}
    # The gradient boosting classifier keeps a LabelEncoder (skops trusts it by default).
    classes |= {Pipeline, StandardScaler, LabelEncoder, DecisionTreeClassifier, DecisionTreeRegressor}
    listing = sorted(((cls.__name__, cls) for cls in classes), key=lambda item: item[0])
    original = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: listing
    try:
        import skops.io  # noqa: F401
    finally:
        sklearn.utils.all_estimators = original


_FALLBACK_LIBRARIES = ("scikit-learn", "skops", "numpy", "scipy")
"""What deserialising the pipeline itself needs: a version other than training's is refused."""


def _choose_runtime(model_dir: Path, metadata: ReleaseMetadata) -> RuntimeChoice:
    """The release's precompiled runtime when it checks out here; scikit-learn otherwise."""
    from model.artifact import load_sklearn_model
    from model.runtime_bundle import BundleError, load_runtime

    try:
        choice = load_runtime(model_dir)
        refused = "the release has no precompiled runtime"
    except BundleError as exc:
        choice, refused = None, f"precompiled runtime refused: {exc}"
    if choice is not None:
        return choice
    _check_library_skew(metadata, refused)
    log.warning("%s; loading the pipeline with scikit-learn", refused)
    _import_skops_narrowly()
    # The checksum was verified with the rest of the model folder.
    pipeline = load_sklearn_model(model_dir, metadata.estimator, metadata.task, None)
    return RuntimeChoice(SklearnRuntime(pipeline, metadata.task == "classification"), refused)


def _check_library_skew(metadata: ReleaseMetadata, refused: str) -> None:
    from importlib.metadata import PackageNotFoundError, version

    skew = []
    for name in _FALLBACK_LIBRARIES:
        recorded = metadata.libraries.get(name)
        try:
            here = version(name)
        except PackageNotFoundError:
            here = "not installed"
        if recorded is not None and recorded != here:
            skew.append(f"{name} {recorded} at training, {here} here")
    if skew:
        raise LoadError(
            f"release {metadata.release_id} must be loaded with scikit-learn ({refused}), but "
            f"{'; '.join(skew)}: serve it from an image with the training versions, or retrain it"
        )


def _registered_version(folder: Path, metadata: ReleaseMetadata) -> str | None:
    """The version recorded beside the release by training, if it matches the release."""
    from model.artifact import REGISTRATION_FILE, ArtifactError, Registration

    try:
        registration = Registration.from_json((folder / REGISTRATION_FILE).read_text())
    except (OSError, ArtifactError):
        return None
    return registration.version if registration.release_id == metadata.release_id else None


def load_release(
    uri: str,
    expected_sha256: str | None,
    model_version: str | None,
    scratch: Path | None = None,
    retry: RetryPolicy | None = None,
) -> LoadedRelease:
    """Everything the server needs, or a LoadError that says what is wrong."""
    from model.artifact import ArtifactError, ReleaseMetadata, verify_model_dir
    from model.server.decode import Decoder
    from model.server.errors import RequestError
    from model.server.schema import SchemaError

    scratch = scratch or Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    folder, registry_version = fetch_release(uri, scratch, retry)
    model_dir = folder / MODEL_SUBDIR
    try:
        metadata = ReleaseMetadata.from_json((folder / RELEASE_FILE).read_text())
        mlmodel = verify_model_dir(model_dir, expected_sha256 or metadata.model_sha256)
        schema = InputSchema.from_mlmodel(mlmodel, model_dir / "MLmodel")
    except (ArtifactError, SchemaError, OSError, TypeError, ValueError) as exc:
        raise LoadError(str(exc)) from exc
    if list(schema.names) != list(metadata.feature_names):
        raise LoadError("the model's signature and release.json disagree on the feature names")
    try:
        body = (model_dir / "serving_input_example.json").read_bytes()
        example = Decoder(schema, 1_000_000).invocations(body, "application/json", False).X
    except (OSError, RequestError) as exc:
        raise LoadError(
            f"the model's serving input example is missing or does not fit its signature: {exc}"
        ) from exc
    try:
        choice = _choose_runtime(model_dir, metadata)
    except ArtifactError as exc:
        raise LoadError(str(exc)) from exc
    classification = metadata.task == "classification"
    classes = tuple(metadata.classes) if classification and metadata.classes is not None else None
    return LoadedRelease(
        model_name=metadata.model_name,
        release_id=metadata.release_id,
        model_version=model_version
        or registry_version
        or _registered_version(folder, metadata)
        or metadata.release_id,
        task=metadata.task,
        estimator=metadata.estimator,
        classes=classes,
        schema=schema,
        runtime=choice.runtime,
        runtime_reason=choice.reason,
        example=example,
        folder=folder,
        target=metadata.spec.get("target"),
    )
