"""Release identity: what a release is made of, as one short content hash.

release_id = sha256(canonical spec, dataset content hash, training code hash, training
runtime)[:12]. Pure: identical on every machine for identical inputs, so `pulumi preview`
knows it before any Job runs, and the Job can check that it is training the same thing.

The git commit is lineage only (a tag and a record): a commit that changes nothing the model
is made of must not make a new release.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.artifact import file_sha256, tree_checksum
from model.spec import TrainingSpec

if TYPE_CHECKING:
    from model.data import S3Access

__all__ = [
    "MODEL_DIR",
    "TRAINING_LIBRARIES",
    "ReleaseInputs",
    "ReleasePlan",
    "canonical_spec",
    "code_hash",
    "git_commit",
    "plan_release",
    "release_id",
    "spec_sha256",
    "training_runtime",
]

MODEL_DIR = Path(__file__).resolve().parent
# The server and the retrain trigger are versioned by the serving image, not by the release:
# changing how predictions are served or alerts handled must not retrain the model.
_NOT_TRAINING_CODE = ("server", "retrain_trigger.py")
TRAINING_LIBRARIES = ("numpy", "scipy", "scikit-learn", "skops", "onnx")
"""What fits the model (numpy, SciPy, scikit-learn) and serialises it (skops; onnx for the
precompiled serving runtime): a new version of any of them is a new release."""


def canonical_spec(spec: TrainingSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def spec_sha256(spec: TrainingSpec) -> str:
    return hashlib.sha256(canonical_spec(spec).encode()).hexdigest()


def training_code_files(root: Path = MODEL_DIR) -> list[Path]:
    """The Python files the release id hashes (and the training image copies), in path order."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] not in _NOT_TRAINING_CODE and "__pycache__" not in p.parts
    )


def code_hash(root: Path = MODEL_DIR) -> str:
    """SHA-256 over the training code's Python files: relative path and content, in path order
    (a release folder's checksum formula, `model.artifact.tree_checksum`)."""
    return tree_checksum(
        {path.relative_to(root).as_posix(): file_sha256(path) for path in training_code_files(root)}
    )


def training_runtime() -> dict[str, str]:
    """The Python minor version and the training libraries' versions in this environment."""
    runtime = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    runtime.update({name: version(name) for name in TRAINING_LIBRARIES})
    return runtime


def release_id(
    spec: TrainingSpec, dataset_hash: str, training_code_hash: str, runtime: dict[str, str]
) -> str:
    return ReleaseInputs.of(spec, dataset_hash, training_code_hash, runtime).release_id


@dataclass(frozen=True)
class ReleaseInputs:
    """Everything the release id is a hash of, kept apart so that a mismatch can say what differs."""

    spec_sha256: str
    dataset_hash: str
    code_hash: str
    runtime: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, spec: TrainingSpec, dataset_hash: str, training_code_hash: str, runtime: dict[str, str]
    ) -> ReleaseInputs:
        return cls(spec_sha256(spec), dataset_hash, training_code_hash, dict(sorted(runtime.items())))

    @property
    def release_id(self) -> str:
        runtime = json.dumps(self.runtime, sort_keys=True, separators=(",", ":"))
        payload = "\n".join((self.spec_sha256, self.dataset_hash, self.code_hash, runtime))
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def differences(self, other: ReleaseInputs) -> list[str]:
        """One phrase per input that differs, e.g. `scikit-learn 1.9.1 here, 1.8.0 expected`."""
        found = []
        for label, mine, theirs in (
            ("training spec sha256", self.spec_sha256, other.spec_sha256),
            ("dataset hash", self.dataset_hash, other.dataset_hash),
            ("training code hash", self.code_hash, other.code_hash),
        ):
            if mine != theirs:
                found.append(f"{label} {mine[:12]} here, {theirs[:12]} expected")
        for name in sorted(set(self.runtime) | set(other.runtime)):
            mine_v, theirs_v = self.runtime.get(name, "absent"), other.runtime.get(name, "absent")
            if mine_v != theirs_v:
                found.append(f"{name} {mine_v} here, {theirs_v} expected")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"release_id": self.release_id, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReleaseInputs:
        inputs = cls(
            str(raw["spec_sha256"]), str(raw["dataset_hash"]), str(raw["code_hash"]), dict(raw["runtime"])
        )
        if "release_id" in raw and raw["release_id"] != inputs.release_id:
            raise ValueError(f"release inputs hash to {inputs.release_id}, but say {raw['release_id']}")
        return inputs


@dataclass(frozen=True)
class ReleasePlan:
    """What a spec resolves to before any training."""

    inputs: ReleaseInputs
    rows: int

    @property
    def release_id(self) -> str:
        return self.inputs.release_id


def plan_release(
    spec: TrainingSpec, access: S3Access | None = None, cache_dir: Path | None = None
) -> ReleasePlan:
    """The release a spec makes in this environment, reading the dataset only when it changed.

    `access` is how to read an s3:// dataset (the stack's endpoint and credentials); `cache_dir`
    keeps dataset identities by their stored version (see `model.data.identify_dataset`).
    """
    from model.data import identify_dataset

    identity = identify_dataset(spec.dataset, access, cache_dir)
    identity.check_target(spec.target)
    inputs = ReleaseInputs.of(spec, identity.content_hash, code_hash(), training_runtime())
    return ReleasePlan(inputs, identity.rows)


def git_commit(root: Path = MODEL_DIR.parent) -> str | None:
    """The commit the code came from: MLOPS_GIT_COMMIT, else git, else None."""
    if commit := os.environ.get("MLOPS_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
