"""Crash-safe releases: a half-finished upload is never mistaken for a release.

Real SeaweedFS (stopped mid-upload and started again on the same ports and data) and a real
MLflow server (stopped between the commit marker and the registration). The crash points are
deterministic: the release's `on_stored` progress callback stops the service after a given
object, in the upload order (path order, the marker `release.json` last).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient

from model.artifact import (
    RELEASE_FILE,
    IncompleteRelease,
    Registration,
    ReleaseMetadata,
    directory_checksum,
)
from model.errors import RegistryError
from model.lineage import plan_release
from model.release_store import ReleaseConflict, publish_release, read_marker
from model.server.loader import LoadError, load_release
from model.spec import RegistrySettings, TrainingSpec
from model.train import ReleaseOptions, train_release
from tests.services import MlflowService, S3Service, start_mlflow, start_seaweedfs
from tests.specs import quick_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _spec(**overrides: Any) -> TrainingSpec:
    return quick_spec("crash", **overrides)


def _objects(s3: S3Service, uri: str) -> dict[str, tuple[str, Any]]:
    """{path in the folder: (ETag, LastModified)}: any re-upload changes LastModified."""
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1 :]: (o["ETag"], o["LastModified"]) for o in listed.get("Contents", [])}


def _versions(tracking_uri: str, name: str) -> list[Any]:
    return MlflowClient(tracking_uri, tracking_uri).search_model_versions(f"name = '{name}'")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Service]:
    """A SeaweedFS of this test's own (it is stopped mid-test), as the ambient S3 of this process.

    The MLflow server keeps its run artifacts in the session store; this one holds the releases.
    """
    service = start_seaweedfs(tmp_path / "weed")
    for key, value in service.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # boto3's default session keeps the ambient credentials it first read: start afresh, and
    # leave a fresh one behind for the tests that use the session store's.
    boto3.DEFAULT_SESSION = None
    yield service
    service.stop()
    boto3.DEFAULT_SESSION = None


def test_a_store_stopped_mid_upload_registers_nothing_and_a_rerun_completes_once(
    mlflow_server: MlflowService, store: S3Service, tmp_path: Path
) -> None:
    spec = _spec()
    registry = RegistrySettings(
        tracking_uri=mlflow_server.tracking_uri,
        artifact_root=f"s3://{store.make_bucket('releases')}",
        s3_endpoint_url=store.endpoint_url,
    )
    release_id = plan_release(spec).release_id
    folder = f"{registry.artifact_root}/{spec.model_name}/{release_id}"
    stored: list[str] = []

    def stop_the_store_after_three(path: str) -> None:
        stored.append(path)
        if len(stored) == 3:
            store.stop()

    crash = ReleaseOptions(on_stored=stop_the_store_after_three)
    with pytest.raises(RegistryError, match=f"uploading release artifacts to {folder} failed"):
        train_release(spec, registry, tmp_path, log=lambda _: None, options=crash)
    assert len(stored) == 3 and RELEASE_FILE not in stored
    assert _versions(mlflow_server.tracking_uri, spec.model_name) == []

    store.start()  # same ports, same data
    before = _objects(store, folder)
    assert sorted(before) == sorted(stored)  # what was stored before the crash survived it, nothing more
    incomplete = f"release {release_id} at {folder} is incomplete: no commit marker ({RELEASE_FILE}); "
    incomplete += "re-run the release"
    with pytest.raises(LoadError) as refused:
        load_release(folder, None, None, scratch=tmp_path)
    assert str(refused.value) == incomplete
    with pytest.raises(IncompleteRelease) as unread:
        read_marker(folder, release_id)  # what promotion and `mlops status` read
    assert str(unread.value) == incomplete

    lines: list[str] = []
    outcome = train_release(spec, registry, tmp_path, log=lines.append)
    assert outcome.status == "registered"
    assert [v.version for v in _versions(mlflow_server.tracking_uri, spec.model_name)] == [outcome.version]
    after = _objects(store, folder)
    record = read_marker(folder, release_id)
    assert set(after) == {*record.files, RELEASE_FILE, "registration.json"}
    # Only what was missing or differs went up again: an object stored before the crash with the
    # same content (same ETag) is the very same object (same LastModified).
    summary = next(line for line in lines if line.startswith("stored "))
    kept = sum(after[path] == before[path] for path in before)
    assert kept >= 1, (before, after)  # conda.yaml, input_example.json: the same bytes every run
    assert summary.startswith(f"stored {len(record.files) - kept} objects ({kept} already there")
    assert all(after[path][1] == before[path][1] for path in before if after[path][0] == before[path][0])
    loaded = load_release(folder, None, None, scratch=tmp_path)
    assert (loaded.release_id, loaded.model_version) == (release_id, outcome.version)

    again = train_release(spec, registry, tmp_path, log=lambda _: None)
    assert again.status == "exists" and again.version == outcome.version
    assert _objects(store, folder) == after  # a finished release uploads nothing
    assert len(_versions(mlflow_server.tracking_uri, spec.model_name)) == 1


@pytest.fixture
def own_mlflow(s3_env: S3Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowService]:
    """An MLflow server this test may stop (the releases stay in the session store)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    service = start_mlflow(tmp_path / "own-mlflow", s3_env)
    yield service
    service.stop()


def test_a_committed_release_whose_registration_failed_is_adopted_not_uploaded_again(
    own_mlflow: MlflowService, s3_env: S3Service, tmp_path: Path
) -> None:
    """The registry goes away right after the commit marker: the re-run registers the folder
    that is there, uploading nothing."""
    spec = _spec()
    registry = RegistrySettings(
        tracking_uri=own_mlflow.tracking_uri,
        artifact_root=own_mlflow.artifact_root,
        s3_endpoint_url=s3_env.endpoint_url,
    )
    release_id = plan_release(spec).release_id
    folder = f"{registry.artifact_root}/{spec.model_name}/{release_id}"

    def stop_mlflow_after_the_marker(path: str) -> None:
        if path == RELEASE_FILE:
            own_mlflow.stop()

    with pytest.raises(RegistryError, match="registering"):
        train_release(
            spec, registry, tmp_path, lambda _: None, ReleaseOptions(on_stored=stop_mlflow_after_the_marker)
        )
    own_mlflow.start()
    assert _versions(own_mlflow.tracking_uri, spec.model_name) == []
    committed = _objects(s3_env, folder)
    assert RELEASE_FILE in committed and "registration.json" not in committed

    lines: list[str] = []
    outcome = train_release(spec, registry, tmp_path, log=lines.append)
    assert outcome.status == "registered"
    assert f"{folder} already holds this release, committed: uploaded nothing" in lines
    after = _objects(s3_env, folder)
    assert {k: v for k, v in after.items() if k != "registration.json"} == committed
    record = read_marker(folder, release_id)
    version = MlflowClient(own_mlflow.tracking_uri).get_model_version(spec.model_name, outcome.version)
    assert version.tags["mlops.model_sha256"] == record.model_sha256
    assert len(_versions(own_mlflow.tracking_uri, spec.model_name)) == 1
    bucket, prefix = folder.removeprefix("s3://").split("/", 1)
    registration = s3_env.client().get_object(Bucket=bucket, Key=f"{prefix}/registration.json")
    assert Registration.from_json(registration["Body"].read().decode()).version == outcome.version


# ---- publishing to a local folder (the embedded registry's store) ------------------------------


def _staged(root: Path, content: bytes = b"weights") -> tuple[Path, ReleaseMetadata]:
    staging = root / "staging"
    (staging / "model").mkdir(parents=True)
    (staging / "model" / "MLmodel").write_text("flavors: {}\n")
    (staging / "model" / "model.skops").write_bytes(content)
    (staging / "reference_profile.json").write_text(json.dumps({"columns": []}))
    metadata = ReleaseMetadata(
        release_id="0123456789ab",
        model_name="m",
        task="classification",
        estimator="logistic_regression",
        dataset_uri="sklearn:breast_cancer",
        dataset_hash="d" * 64,
        code_hash="c" * 64,
        git_commit=None,
        model_sha256=directory_checksum(staging / "model"),
        metrics={},
        gates={"passed": True},
        libraries={},
        feature_names=[],
    )
    return staging, metadata


def test_publishing_commits_last_resumes_and_never_rewrites_a_committed_folder(tmp_path: Path) -> None:
    staging, metadata = _staged(tmp_path)
    target = tmp_path / "store" / "m" / metadata.release_id
    order: list[str] = []
    first = publish_release(staging, str(target), metadata, on_stored=order.append)
    assert order == ["model/MLmodel", "model/model.skops", "reference_profile.json", RELEASE_FILE]
    assert first.uploaded == tuple(order) and first.kept == 0
    record = ReleaseMetadata.from_json((target / RELEASE_FILE).read_text())
    assert record.files == {
        p.relative_to(staging).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in staging.rglob("*")
        if p.is_file()
    }
    stamps = {p: p.stat().st_mtime_ns for p in target.rglob("*")}

    again = publish_release(staging, str(target), metadata, on_stored=order.append)
    assert again.adopted and again.uploaded == () and again.metadata == record and len(order) == 4
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == stamps

    # A crash left part of another attempt (no marker, one file different, one stray): the
    # re-run uploads only what differs, removes the stray, then commits.
    (target / RELEASE_FILE).unlink()
    (target / "model" / "model.skops").write_bytes(b"half")
    (target / "model" / "leftover.tmp").write_bytes(b"x")
    resumed = publish_release(staging, str(target), metadata)
    assert resumed.uploaded == ("model/model.skops", RELEASE_FILE) and resumed.kept == 2
    assert not (target / "model" / "leftover.tmp").exists()
    assert directory_checksum(target / "model") == metadata.model_sha256

    # Someone changed a committed folder: it is refused, not silently rewritten.
    (target / "reference_profile.json").write_text("{}")
    with pytest.raises(
        ReleaseConflict,
        match=r"is committed, but its objects no longer match its marker \(reference_profile.json\)",
    ):
        publish_release(staging, str(target), metadata)
    assert (target / "reference_profile.json").read_text() == "{}"


def test_a_record_from_before_the_marker_is_adopted_only_when_its_model_is_whole(tmp_path: Path) -> None:
    """A release.json without a manifest was uploaded in no set order: trusted only when the
    model it records is all there; otherwise the folder is finished like any crashed upload."""
    staging, metadata = _staged(tmp_path)
    target = tmp_path / "store" / "m" / metadata.release_id
    shutil.copytree(staging, target)
    (target / RELEASE_FILE).write_text(metadata.to_json())  # no `files`
    assert publish_release(staging, str(target), metadata).adopted

    (target / "model" / "model.skops").unlink()
    resumed = publish_release(staging, str(target), metadata)
    assert resumed.uploaded == ("model/model.skops", RELEASE_FILE)
    assert ReleaseMetadata.from_json((target / RELEASE_FILE).read_text()).files
