"""A release's artifacts on disk: layout, metadata, checksum and safe loading.

Kept free of MLflow and (at import) scikit-learn so that the model server starts fast;
writing goes through `model.registry`, which is the only module that talks to MLflow.

    <artifact_root>/<model_name>/<release_id>/
        model/                    the MLflow model (MLmodel, model.skops, signature, example)
            runtime/              precompiled serving runtime (see model/runtime_bundle.py)
        reference_profile.json    training-data profile for drift detection
        release.json              lineage, metrics, gate results, model checksum; the commit marker
        registration.json         the registered version, written once registration succeeded

`release.json` is written last, once every other object is in the store with the checksum it
lists (`ReleaseMetadata.files`; see `model.release_store`): a folder without it is an upload that
never finished, and every reader refuses it (`IncompleteRelease`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from model.estimators import Task

__all__ = [
    "MODEL_SUBDIR",
    "PROFILE_FILE",
    "REGISTRATION_FILE",
    "RELEASE_FILE",
    "ArtifactError",
    "IncompleteRelease",
    "Registration",
    "ReleaseMetadata",
    "directory_checksum",
    "file_sha256",
    "load_sklearn_model",
    "release_uri",
    "tree_checksum",
    "verify_model_dir",
]

MODEL_SUBDIR = "model"
PROFILE_FILE = "reference_profile.json"
RELEASE_FILE = "release.json"
REGISTRATION_FILE = "registration.json"
METADATA_FORMAT = 1
# MLflow adds this file when it downloads a `models:/` URI; it is not part of what was trained.
_DOWNLOAD_ONLY = frozenset({"registered_model_meta"})


class ArtifactError(RuntimeError):
    """A release artifact that is missing, corrupt, unsafe or from an incompatible library."""


class IncompleteRelease(ArtifactError):
    """A release folder without its commit marker: an upload that never finished."""

    def __init__(self, release_id: str, uri: str) -> None:
        super().__init__(
            f"release {release_id} at {uri} is incomplete: no commit marker ({RELEASE_FILE}); "
            "re-run the release"
        )


def release_uri(artifact_root: str, model_name: str, release_id: str) -> str:
    """Immutable location of one release: never a moving alias."""
    return f"{artifact_root.rstrip('/')}/{model_name}/{release_id}"


@dataclass(frozen=True)
class ReleaseMetadata:
    release_id: str
    model_name: str
    task: Task
    estimator: str
    dataset_uri: str
    dataset_hash: str
    code_hash: str
    git_commit: str | None
    model_sha256: str
    metrics: dict[str, float]
    gates: dict[str, Any]
    libraries: dict[str, str]
    feature_names: list[str]
    classes: list[Any] | None = None
    format: int = METADATA_FORMAT
    spec: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    """What the release id hashes (model.lineage.ReleaseInputs), training runtime included."""
    files: dict[str, str] = field(default_factory=dict)
    """The commit manifest: SHA-256 of every other object of the release folder (relative path),
    registration.json aside. Empty in records written before release.json was the commit marker."""

    @property
    def gates_passed(self) -> bool:
        return bool(self.gates.get("passed"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseMetadata:
        raw = json.loads(text)
        if raw.get("format") != METADATA_FORMAT:
            raise ArtifactError(
                f"release metadata format {raw.get('format')!r} is not supported (expected {METADATA_FORMAT})"
            )
        return cls(**raw)


@dataclass(frozen=True)
class Registration:
    """The model version a release was registered as, stored beside it in the artifact store.

    Readers (the release record `pulumi up` reads back, the server) learn the version from the
    store they already read, without an MLflow reachable from where they run.
    """

    model_name: str
    release_id: str
    version: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Registration:
        try:
            raw = json.loads(text)
            return cls(str(raw["model_name"]), str(raw["release_id"]), str(raw["version"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{REGISTRATION_FILE} is not a registration record: {exc}") from exc


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_checksum(files: dict[str, str]) -> str:
    """SHA-256 over {relative path: file SHA-256}, in path order: `directory_checksum`'s formula,
    so that a store's listing can be checked without downloading it into a folder first."""
    digest = hashlib.sha256()
    for rel in sorted(files, key=lambda rel: rel.split("/")):  # as paths sort: part by part
        digest.update(rel.encode() + b"\0" + bytes.fromhex(files[rel]) + b"\n")
    return digest.hexdigest()


def directory_checksum(path: Path) -> str:
    """SHA-256 over every file under `path` (relative path and content), in path order."""
    files = {
        p.relative_to(path).as_posix(): file_sha256(p)
        for p in path.rglob("*")
        if p.is_file() and p.name not in _DOWNLOAD_ONLY
    }
    if not files:
        raise ArtifactError(f"{path} holds no files")
    return tree_checksum(files)


def verify_model_dir(model_dir: Path, expected_sha256: str | None) -> dict[str, Any]:
    """Check the checksum (when one is expected) and that the model is skops, not pickle.

    Returns the parsed MLmodel, so that callers do not read it again.
    """
    if expected_sha256 is not None:
        actual = directory_checksum(model_dir)
        if actual != expected_sha256:
            raise ArtifactError(
                f"model at {model_dir} has checksum {actual}, but the release recorded "
                f"{expected_sha256}: refusing a modified or partial artifact"
            )
    try:
        mlmodel: dict[str, Any] = yaml.safe_load((model_dir / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["sklearn"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{model_dir} is not an MLflow scikit-learn model: {exc}") from exc
    if flavor.get("serialization_format") != "skops":
        raise ArtifactError(
            f"{model_dir} uses serialization {flavor.get('serialization_format')!r}; "
            "only skops is loaded (pickle can run arbitrary code)"
        )
    return mlmodel


def load_sklearn_model(model_dir: Path, estimator: str, task: Task, expected_sha256: str | None) -> Any:
    """Load a saved pipeline with our trusted-types list; refuse pickle and checksum mismatches."""
    import skops.io

    from model.estimators import trusted_types

    flavor = verify_model_dir(model_dir, expected_sha256)["flavors"]["sklearn"]
    try:
        return skops.io.load(model_dir / flavor["pickled_model"], trusted=trusted_types(estimator, task))
    except Exception as exc:
        raise ArtifactError(f"model file in {model_dir} could not be loaded safely: {exc}") from exc
