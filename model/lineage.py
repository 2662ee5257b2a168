"""Release identity: what a release is made of, as one short content hash.

release_id = sha256(canonical spec + dataset content hash + training code hash)[:12]. Pure:
identical on every machine for identical inputs, so `pulumi preview` knows it before any Job runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from model.spec import TrainingSpec

__all__ = ["MODEL_DIR", "canonical_spec", "code_hash", "git_commit", "release_id"]

MODEL_DIR = Path(__file__).resolve().parent
# The server is versioned by the serving image, not by the release: changing how predictions
# are served must not retrain the model.
_NOT_TRAINING_CODE = ("server",)


def canonical_spec(spec: TrainingSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def code_hash(root: Path = MODEL_DIR) -> str:
    """SHA-256 over the training code's Python files: relative path and content, in path order."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] not in _NOT_TRAINING_CODE and "__pycache__" not in p.parts
    )
    for path in files:
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest() + b"\n")
    return digest.hexdigest()


def release_id(spec: TrainingSpec, dataset_hash: str, training_code_hash: str) -> str:
    payload = "\n".join((canonical_spec(spec), dataset_hash, training_code_hash))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def git_commit(root: Path = MODEL_DIR.parent) -> str | None:
    """The commit the code came from: MLOPS_GIT_COMMIT (set in images), else git, else None."""
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
