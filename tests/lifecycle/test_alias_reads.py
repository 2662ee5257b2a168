"""Loading `models:/<name>@champion` while releases move the alias: every load is one complete,
checksum-verified version, never a mix of two and never an error. Real MLflow server, releases
in real SeaweedFS, loads through the server's own loader, concurrently with the alias moves."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from model.artifact import PROFILE_FILE, directory_checksum
from model.registry import RELEASE_TAG
from model.server.loader import load_release
from model.spec import RegistrySettings, TrainingSpec
from model.train import train_release
from tests.services import MlflowService, S3Service
from tests.specs import quick_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOADERS = 4
LOADS = 48
"""At least this many loads in all, and each version loaded at least a few times."""
DEADLINE_S = 300


def _spec(name: str, seed: int) -> TrainingSpec:
    return quick_spec("alias", model_name=name, seed=seed)


def test_loads_during_alias_moves_each_read_one_whole_version(
    mlflow_server: MlflowService, s3_env: S3Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = RegistrySettings(
        tracking_uri=mlflow_server.tracking_uri,
        artifact_root=mlflow_server.artifact_root,
        s3_endpoint_url=s3_env.endpoint_url,
    )
    name = f"alias-{uuid.uuid4().hex[:8]}"
    for seed in (1, 2):
        train_release(_spec(name, seed), registry, tmp_path, log=lambda _: None)
    client = MlflowClient(mlflow_server.tracking_uri, mlflow_server.tracking_uri)
    expected = {
        str(v.version): (v.tags[RELEASE_TAG], v.tags["mlops.model_sha256"])
        for v in client.search_model_versions(f"name = '{name}'")
    }
    assert len(expected) == 2 and len({rid for rid, _ in expected.values()}) == 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    uri = f"models:/{name}@champion"
    load_release(uri, None, None, scratch=tmp_path)  # imports done once, before the threads

    done = threading.Event()
    moves = 0
    seen: list[tuple[str, str, str, bool]] = []
    errors: list[BaseException] = []

    def move_the_alias() -> None:
        nonlocal moves
        versions = sorted(expected)
        while not done.is_set():
            client.set_registered_model_alias(name, "champion", versions[moves % len(versions)])
            moves += 1
            time.sleep(0.005)

    def load_repeatedly(index: int) -> None:
        scratch = tmp_path / f"loader-{index}"
        scratch.mkdir()
        while not done.is_set():
            try:
                loaded = load_release(uri, None, None, scratch=scratch)
            except BaseException as exc:  # an error is a finding, not a reason to stop the others
                errors.append(exc)
                return
            checksum = directory_checksum(loaded.folder / "model")
            seen.append(
                (loaded.model_version, loaded.release_id, checksum, (loaded.folder / PROFILE_FILE).is_file())
            )

    mover = threading.Thread(target=move_the_alias)
    loaders = [threading.Thread(target=load_repeatedly, args=(i,)) for i in range(LOADERS)]
    mover.start()
    for thread in loaders:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not errors and not _enough(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    for thread in [mover, *loaders]:
        thread.join(timeout=60)
    assert not errors, errors[0]
    assert _enough(seen), f"{len(seen)} loads in {DEADLINE_S}s: {_counts(seen)}"
    for version, release_id, checksum, has_profile in seen:
        assert (release_id, checksum) == expected[version], (version, release_id)
        assert has_profile
    assert moves >= 10, f"the alias moved only {moves} times during the loads"
    print(f"{len(seen)} loads by {LOADERS} threads, {moves} alias moves: {_counts(seen)}")


def _counts(seen: list[tuple[str, str, str, bool]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for version, *_ in seen:
        counts[version] = counts.get(version, 0) + 1
    return counts


def _enough(seen: list[tuple[str, str, str, bool]]) -> bool:
    counts = _counts(seen)
    return len(seen) >= LOADS and len(counts) == 2 and min(counts.values()) >= 5
