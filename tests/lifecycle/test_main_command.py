"""The README's main command, run as a user would: in a fresh copy of the repo, no services."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from model.registry import RELEASE_TAG

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", ".mlops", ".tools", "__pycache__", "*.egg-info", ".*_cache"
)


def _venv_matching_this_checkout() -> Path:
    """The installed venv, provided scripts/setup-venv.sh would not reinstall it from the copy.

    A reinstall would point the shared venv's editable install at the temporary copy.
    """
    venv = Path(sys.executable).parent.parent
    sources = [REPO / "requirements.txt", *sorted((REPO / "images" / "requirements").glob("*.txt"))]
    want = hashlib.sha256(b"".join(p.read_bytes() for p in [*sources, REPO / "pyproject.toml"]))
    stamp = venv / ".mlops-requirements.sha256"
    have = stamp.read_text().strip() if stamp.is_file() else "(none)"
    assert have == want.hexdigest(), (
        f"{stamp} is stale: run ./scripts/test.sh, which installs and stamps the venv"
    )
    return venv


def test_release_command_leaves_a_registered_model_in_the_embedded_registry(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=NOT_SOURCE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))},
        "MLOPS_VENV": str(_venv_matching_this_checkout()),
    }
    result = subprocess.run(
        ["./scripts/release.sh", "--stack", "dev", "--json"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "registered"
    assert "gate accuracy" in result.stderr and "registered breast-cancer version 1" in result.stderr

    database = copy / ".mlops" / "mlflow.db"
    assert database.is_file()
    client = MlflowClient(f"sqlite:///{database}", f"sqlite:///{database}")
    (version,) = client.search_model_versions("name = 'breast-cancer'")
    assert version.tags[RELEASE_TAG] == outcome["release_id"]
    assert Path(str(version.source)).is_relative_to(copy / ".mlops" / "artifacts")
    assert (Path(str(version.source)) / "MLmodel").is_file()
