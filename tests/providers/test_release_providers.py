"""ReleaseRecord and ModelAlias providers against a real MLflow server and real S3 (SeaweedFS).

The providers are driven the way the engine drives them (create, read, diff, update, delete on
plain property dicts), including their failure paths: a record that is missing or belongs to
another release, an unreachable store or tracking server, a version of another release.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from components.providers.model_alias import ModelAliasProvider
from components.providers.release_record import ReleaseRecordProvider
from model.spec import RegistrySettings, TrainingSpec
from model.train import ReleaseOptions, TrainingOutcome, train_release
from tests.services import MlflowService, S3Service, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(
    mlflow_server: MlflowService, s3: S3Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[TrainingOutcome], RegistrySettings]]:
    """Two releases of one model, as the training Job leaves them (candidate, no champion)."""
    saved = {k: os.environ.get(k) for k in s3.env()}
    os.environ.update(s3.env())
    registry = RegistrySettings(
        tracking_uri=mlflow_server.tracking_uri,
        artifact_root=mlflow_server.artifact_root,
        s3_endpoint_url=s3.endpoint_url,
    )
    name = f"prov-{uuid.uuid4().hex[:8]}"
    outcomes = []
    for seed in (1, 2):
        spec = TrainingSpec(
            model_name=name,
            dataset="sklearn:iris",
            target="target",
            task="classification",
            estimator="logistic_regression",
            seed=seed,
            params={"max_iter": 300},
        )
        outcomes.append(
            train_release(
                spec,
                registry,
                tmp_path_factory.mktemp("train"),
                log=lambda _: None,
                options=ReleaseOptions(promote=False),
            )
        )
    yield outcomes, registry
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _record_props(s3: S3Service, outcome: TrainingOutcome, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "release_uri": outcome.model_uri.rsplit("/", 1)[0],
        "model_name": outcome.model_name,
        "release_id": outcome.release_id,
        "endpoint_url": s3.endpoint_url,
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
    }
    return {**props, **overrides}


# ReleaseRecord --------------------------------------------------------------------------------


def test_record_reads_the_release_and_its_version_from_the_store_alone(
    trained: tuple[list[TrainingOutcome], RegistrySettings], s3: S3Service
) -> None:
    (first, second), _ = trained
    provider = ReleaseRecordProvider()
    created = provider.create(_record_props(s3, second))
    outs = created.outs or {}
    assert created.id == f"{second.model_name}/{second.release_id}"
    assert outs["model_version"] == "2" and outs["gates_passed"] is True
    assert len(outs["model_sha256"]) == 64 and outs["mlops_kind"] == "release-record"
    read = provider.read(created.id or "", outs)
    assert (read.outs or {})["model_version"] == "2"
    same = provider.diff(created.id or "", outs, _record_props(s3, second))
    assert same.changes is False
    moved = provider.diff(created.id or "", outs, _record_props(s3, first))
    assert moved.changes is True and set(moved.replaces or []) == {"release_uri", "release_id"}


def test_record_failures_name_the_uri(
    trained: tuple[list[TrainingOutcome], RegistrySettings], s3: S3Service
) -> None:
    (first, second), _ = trained
    provider = ReleaseRecordProvider()
    folder = first.model_uri.rsplit("/", 1)[0]
    missing = _record_props(s3, first, release_uri=folder + "-absent")
    with pytest.raises(RuntimeError, match=rf"release {first.release_id} .* has no complete record: "):
        provider.create(missing)
    # The right folder, but the record of another release.
    other = _record_props(s3, second, release_uri=folder)
    with pytest.raises(RuntimeError, match=rf"{folder}/release.json records release {first.release_id}"):
        provider.create(other)
    # A release uploaded but never registered (the Job stopped before registration.json).
    bucket, _, prefix = folder.removeprefix("s3://").partition("/")
    client = s3.client()
    unregistered = f"{prefix}-unregistered"
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/release.json")["Body"].read()
    client.put_object(Bucket=bucket, Key=f"{unregistered}/release.json", Body=body)
    with pytest.raises(RuntimeError, match=r"registration.json does not exist"):
        provider.create(_record_props(s3, first, release_uri=f"s3://{bucket}/{unregistered}"))
    dead = _record_props(s3, first, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError, match=rf"could not read {folder}/release.json from http://127.0.0.1"):
        provider.create(dead)


# ModelAlias -----------------------------------------------------------------------------------


def _alias_props(tracking_uri: str, outcome: TrainingOutcome, **overrides: Any) -> dict[str, Any]:
    props = {
        "tracking_uri": tracking_uri,
        "model_name": outcome.model_name,
        "alias": "champion",
        "version": outcome.version,
        "release_id": outcome.release_id,
    }
    return {**props, **overrides}


def _alias(tracking_uri: str, name: str, alias: str = "champion") -> str | None:
    aliases = MlflowClient(tracking_uri, tracking_uri).get_registered_model(name).aliases or {}
    value = aliases.get(alias)
    return None if value is None else str(value)


def test_alias_lifecycle_and_a_move_by_hand(trained: tuple[list[TrainingOutcome], RegistrySettings]) -> None:
    (first, second), registry = trained
    uri = str(registry.tracking_uri)
    name = first.model_name
    provider = ModelAliasProvider()
    created = provider.create(_alias_props(uri, first))
    outs = created.outs or {}
    assert created.id == f"{name}@champion" and outs["version"] == "1"
    assert outs["previous_version"] == "" and _alias(uri, name) == "1"

    # Someone moves the alias by hand: a refresh reads the version it names now ...
    MlflowClient(uri, uri).set_registered_model_alias(name, "champion", "2")
    refreshed = provider.read(created.id or "", outs)
    assert (refreshed.outs or {})["version"] == "2" and (refreshed.inputs or {})["version"] == "2"
    # ... which the program's inputs (version 1) show as a change, and an update moves back.
    diff = provider.diff(created.id or "", refreshed.outs or {}, _alias_props(uri, first))
    assert diff.changes is True and not diff.replaces
    updated = provider.update(created.id or "", refreshed.outs or {}, _alias_props(uri, first))
    assert (updated.outs or {})["previous_version"] == "2" and _alias(uri, name) == "1"

    # The next release: an update, not a replacement.
    diff = provider.diff(created.id or "", updated.outs or {}, _alias_props(uri, second))
    assert diff.changes is True and not diff.replaces
    provider.update(created.id or "", updated.outs or {}, _alias_props(uri, second))
    assert _alias(uri, name) == "2"
    # Another alias name or model replaces the resource.
    renamed = provider.diff(
        created.id or "", _alias_props(uri, second), _alias_props(uri, second, alias="prod")
    )
    assert renamed.replaces == ["alias"]

    # Delete removes the alias only while it names the stack's version.
    MlflowClient(uri, uri).set_registered_model_alias(name, "champion", "1")
    provider.delete(created.id or "", _alias_props(uri, second))
    assert _alias(uri, name) == "1"  # moved by hand: left alone
    provider.delete(created.id or "", _alias_props(uri, first))
    assert _alias(uri, name) is None
    # Read of an alias that is gone: a diff (version ''), so `up --refresh` sets it again.
    gone = provider.read(created.id or "", _alias_props(uri, first))
    assert (gone.outs or {})["version"] == ""


def test_alias_refuses_a_version_of_another_release_and_an_unreachable_registry(
    trained: tuple[list[TrainingOutcome], RegistrySettings],
) -> None:
    (first, second), registry = trained
    uri = str(registry.tracking_uri)
    provider = ModelAliasProvider()
    MlflowClient(uri, uri).set_registered_model_alias(first.model_name, "guarded", "1")
    wrong = _alias_props(uri, first, alias="guarded", version="2")  # version 2 is the second release
    with pytest.raises(RuntimeError, match=rf"version 2 at {uri} is release {second.release_id}, not"):
        provider.create(wrong)
    assert _alias(uri, first.model_name, "guarded") == "1"  # nothing moved
    with pytest.raises(RuntimeError, match=r"looking up version 9 .* failed"):
        provider.create(_alias_props(uri, first, version="9", release_id=None))
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match=rf"looking up version 1 at {dead} failed"):
        provider.create(_alias_props(dead, first))
    with pytest.raises(RuntimeError, match=rf"reading the alias at {dead} failed"):
        provider.read(f"{first.model_name}@champion", _alias_props(dead, first))
    checked = provider.check({}, _alias_props(uri, first, version="latest", alias="no spaces"))
    assert {f.property for f in checked.failures} == {"version", "alias"}


def test_model_gone_reads_as_deleted(mlflow_server: MlflowService, tmp_path: Path) -> None:
    uri = mlflow_server.tracking_uri
    props = {
        "tracking_uri": uri,
        "model_name": f"gone-{uuid.uuid4().hex[:8]}",
        "alias": "champion",
        "version": "1",
        "release_id": None,
    }
    read = ModelAliasProvider().read("x@champion", props)
    assert read.id == "" and read.outs == {}
