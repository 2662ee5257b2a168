"""Promotion, rollback and history against real services: two registries (MLflow servers) and two
artifact stores (SeaweedFS), as a dev and a prod stack have them.

Module-scoped world, tests in file order: each starts from what the earlier ones left (prod's
pin, registry and history grow as a real prod's would).
"""

from __future__ import annotations

import difflib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

import infra.promotion
from components.providers.mlflow_credentials import tracking_client
from infra.cli import app
from infra.history import read_history
from infra.promotion import PromotionError, destination_lock, place_of, promote
from infra.render import render_stack
from infra.stack_file import read_pin
from model.registry import RELEASE_TAG
from model.spec import RegistrySettings
from model.train import train_release
from tests.services import MlflowService, S3Service, start_mlflow, start_seaweedfs
from tests.specs import quick_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer"
PROD_MLFLOW_PASSWORD = "Prod-MLflow-Admin-7f3a"


@dataclass
class World:
    root: Path
    dev_s3: S3Service
    prod_s3: S3Service
    dev_mlflow: MlflowService
    prod_mlflow: MlflowService
    dev_bucket: str
    prod_bucket: str
    workdir: Path
    served: list[str]
    """Release ids prod was pinned to, in order."""

    @property
    def prod_file(self) -> Path:
        return self.root / "Pulumi.prod.yaml"

    def dev_release(self, seed: int, **gates: Any) -> str:
        """Train a release into dev's registry and store; it becomes dev's champion when it passes."""
        spec = quick_spec(
            MODEL, model_name=MODEL, seed=seed, gates=gates or {"thresholds": {"accuracy": {"min": 0.9}}}
        )
        registry = RegistrySettings(
            tracking_uri=self.dev_mlflow.tracking_uri,
            artifact_root=f"s3://{self.dev_bucket}",
            s3_endpoint_url=self.dev_s3.endpoint_url,
        )
        return train_release(spec, registry, self.workdir, lambda _: None).release_id

    def prod(self) -> MlflowClient:
        return tracking_client(self.prod_mlflow.tracking_uri, self.prod_mlflow.credentials)

    def prod_versions(self) -> dict[str, str]:
        found = self.prod().search_model_versions(f"name = '{MODEL}'")
        return {str(v.version): v.tags.get(RELEASE_TAG, "") for v in found}

    def prod_alias(self, alias: str = "candidate") -> str | None:
        try:
            value = (self.prod().get_registered_model(MODEL).aliases or {}).get(alias)
        except Exception:  # no model yet
            return None
        return None if value is None else str(value)

    def prod_objects(self, release_id: str) -> dict[str, str]:
        listed = self.prod_s3.client().list_objects_v2(
            Bucket=self.prod_bucket, Prefix=f"{MODEL}/{release_id}/"
        )
        return {o["Key"]: o["ETag"] for o in listed.get("Contents", [])}


def _edit(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def world(
    s3: S3Service, mlflow_server: MlflowService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("promotion") / "project"
    root.mkdir()
    prod_s3 = start_seaweedfs(root.parent / "prod-s3")
    # Prod's MLflow requires a user, as Pulumi.prod.yaml says (mlops:tracking.auth).
    prod_mlflow = start_mlflow(root.parent / "prod-mlflow", prod_s3, admin_password=PROD_MLFLOW_PASSWORD)
    dev_bucket, prod_bucket = s3.make_bucket("dev"), prod_s3.make_bucket("prod")
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    dev = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    dev["config"]["mlops:artifacts"].update(bucket=dev_bucket, endpoint_url=s3.endpoint_url)
    dev["config"]["mlops:tracking"]["host_tracking_uri"] = mlflow_server.tracking_uri
    (root / "Pulumi.dev.yaml").write_text(yaml.safe_dump(dev, sort_keys=False))
    # prod keeps its comments and layout: only the places the test needs are edited as text.
    prod = _edit(
        (REPO / "Pulumi.prod.yaml").read_text(),
        {
            "bucket: mlops-prod-artifacts": f"bucket: {prod_bucket}",
            "artifact_root: s3://mlops-prod-artifacts": f"artifact_root: s3://{prod_bucket}",
            "    region: eu-west-1": f"    region: us-east-1\n    endpoint_url: {prod_s3.endpoint_url}",
            "https://mlflow.example.internal": prod_mlflow.tracking_uri,  # host_tracking_uri
            # A plain-http store: the pack requires TLS for a bucket prod manages, so this prod
            # serves from an existing bucket, as the cluster test's does.
            "    create: true": "    create: false",
        },
    )
    (root / "Pulumi.prod.yaml").write_text(prod)
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3.env().items():  # dev's store: the ambient credentials
            env.setenv(key, value)
        env.setenv("MLOPS_S3_ACCESS_KEY_ID_PROD", prod_s3.access_key)  # prod's store: its own
        env.setenv("MLOPS_S3_SECRET_ACCESS_KEY_PROD", prod_s3.secret_key)
        env.setenv("MLOPS_TRACKING_PASSWORD_PROD", PROD_MLFLOW_PASSWORD)  # prod's login
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an outage fails in seconds
        env.setenv("GITHUB_ACTOR", "release-bot")
        yield World(root, s3, prod_s3, mlflow_server, prod_mlflow, dev_bucket, prod_bucket, root.parent, [])
    prod_mlflow.stop()
    prod_s3.stop()


def _promote_cli(world: World, *extra: str) -> Any:
    return CliRunner().invoke(app, ["promote", "dev", "prod", *extra, "--workdir", str(world.root)])


def test_dry_run_checks_everything_and_writes_nothing(world: World) -> None:
    world.dev_release(seed=1)
    before = world.prod_file.read_bytes()
    result = _promote_cli(world, "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        "would copy" in result.output and "dry run: every check passed, nothing was written" in result.output
    )
    assert world.prod_file.read_bytes() == before
    assert (
        world.prod_versions() == {}
        and read_history(f"s3://{world.prod_bucket}", MODEL, _prod(world).s3) == []
    )


def _prod(world: World) -> infra.promotion.StackPlace:
    return place_of("prod", world.root)


def test_promote_copies_verifies_registers_pins_and_records(world: World) -> None:
    rid = world.dev_release(seed=1)  # the same release: already registered in dev
    before = world.prod_file.read_text()
    result = _promote_cli(world, "--yes")
    assert result.exit_code == 0, result.output
    world.served.append(rid)
    # The release folder is in prod's store, every object identical to dev's.
    dev_keys = world.dev_s3.client().list_objects_v2(Bucket=world.dev_bucket, Prefix=f"{MODEL}/{rid}/")[
        "Contents"
    ]
    for item in dev_keys:
        source = world.dev_s3.client().get_object(Bucket=world.dev_bucket, Key=item["Key"])["Body"].read()
        copied = world.prod_s3.client().get_object(Bucket=world.prod_bucket, Key=item["Key"])["Body"].read()
        if not item["Key"].endswith("registration.json"):
            assert copied == source, item["Key"]
    # Registered in prod's registry with its lineage and where it came from; candidate names it.
    (version,) = world.prod().search_model_versions(f"name = '{MODEL}'")
    assert version.tags[RELEASE_TAG] == rid and version.tags["mlops.promoted_from"].startswith("dev:")
    assert version.tags["mlops.dataset_hash"] and version.tags["mlops.code_hash"]
    assert world.prod_alias() == str(version.version)
    # Pulumi.prod.yaml changed at the pin's lines only: comments, order and quoting stay.
    after = world.prod_file.read_text()
    changed = [
        line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]  # fmt: skip
    assert {line[1:].split(":")[0].strip() for line in changed} <= {
        "release_id",
        "model_version",
        "model_sha256",
    }
    assert f"    release_id: {rid}" in after or f'    release_id: "{rid}"' in after
    assert f'model_version: "{version.version}"' in after  # quoting kept
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == [
        line for line in after.splitlines() if line.lstrip().startswith("#")
    ]
    # The event, and the destination's diff printed: serving rolls to the release.
    (event,) = read_history(f"s3://{world.prod_bucket}", MODEL, _prod(world).s3)
    assert (event.kind, event.release_id, event.by) == ("promote", rid, "release-bot")
    assert "serving" in result.output and rid in result.output


def test_promoting_what_prod_already_pins_is_a_no_op(world: World) -> None:
    before = world.prod_file.read_bytes()
    result = _promote_cli(world, "--yes")
    assert result.exit_code == 0, result.output
    assert "prod already pins release" in result.output and "nothing to do" in result.output
    assert world.prod_file.read_bytes() == before and len(world.prod_versions()) == 1


def test_refusals_leave_prod_untouched(world: World) -> None:
    before, alias = world.prod_file.read_bytes(), world.prod_alias()
    served = world.served[-1]
    # A release dev does not serve (registered there, but not its champion).
    other = world.dev_release(seed=5, thresholds={"accuracy": {"min": 0.5}}, promote=False)
    for release, message in (
        ("0123456789ab", "release 0123456789ab is not what dev serves"),
        (other, f"release {other} is not what dev serves"),
    ):
        result = _promote_cli(world, "--yes", "--release", release)
        assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
        assert "failed at step 'check'" in result.output
    # Dev's champion moved by hand to a release whose gates failed (registered non-blocking).
    failed = world.dev_release(seed=6, thresholds={"accuracy": {"min": 0.9999}}, blocking=False)
    dev = MlflowClient(world.dev_mlflow.tracking_uri, world.dev_mlflow.tracking_uri)
    champion = dev.get_model_version_by_alias(MODEL, "champion").version
    failed_version = next(
        v.version for v in dev.search_model_versions(f"name = '{MODEL}'") if v.tags[RELEASE_TAG] == failed
    )
    dev.set_registered_model_alias(MODEL, "champion", failed_version)
    try:
        result = _promote_cli(world, "--yes")
        assert result.exit_code == 1 and f"release {failed} did not pass its quality gates" in result.output
    finally:
        dev.set_registered_model_alias(MODEL, "champion", champion)
    assert world.prod_file.read_bytes() == before and world.prod_alias() == alias
    assert read_pin(world.prod_file).release_id == served  # type: ignore[union-attr]


def test_a_copy_that_fails_half_way_is_finished_by_a_rerun(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = world.dev_release(seed=2)
    before, alias = world.prod_file.read_bytes(), world.prod_alias()
    real_client, puts = infra.promotion.s3_client, [0]

    def stopping_client(access: Any) -> Any:
        client = real_client(access)
        if access.access_key_id != world.prod_s3.access_key:
            return client
        put = client.put_object

        def put_then_stop(**kwargs: Any) -> Any:
            puts[0] += 1
            if puts[0] == 3:
                world.prod_s3.stop()  # the destination store goes away mid-copy
            return put(**kwargs)

        client.put_object = put_then_stop
        return client

    monkeypatch.setattr(infra.promotion, "s3_client", stopping_client)
    with pytest.raises(PromotionError) as info:
        promote("dev", "prod", world.root, None, lambda _: None)
    monkeypatch.undo()
    assert info.value.step == "copy" and world.prod_s3.endpoint_url in str(info.value), info.value
    assert world.prod_file.read_bytes() == before
    world.prod_s3.start()
    assert world.prod_alias() == alias and 0 < len(world.prod_objects(rid)) < 12
    promote("dev", "prod", world.root, None, lambda _: None)
    world.served.append(rid)
    assert read_pin(world.prod_file).release_id == rid  # type: ignore[union-attr]
    assert sorted(world.prod_versions().values()) == sorted(world.served)  # one version per release


def test_an_unreachable_destination_registry_then_a_rerun(world: World) -> None:
    rid = world.dev_release(seed=3)
    before = world.prod_file.read_bytes()
    world.prod_mlflow.stop()
    try:
        with pytest.raises(PromotionError) as info:
            promote("dev", "prod", world.root, None, lambda _: None)
    finally:
        world.prod_mlflow.start()
    # The lock lives in that registry: nothing was copied or written before it.
    assert info.value.step == "lock" and world.prod_mlflow.tracking_uri in str(info.value)
    assert world.prod_file.read_bytes() == before and world.prod_objects(rid) == {}
    promote("dev", "prod", world.root, None, lambda _: None)
    world.served.append(rid)
    assert sorted(world.prod_versions().values()) == sorted(world.served)


def test_two_promotions_at_once_one_wins(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = world.dev_release(seed=4)
    # A promotion holding the lock: the next one is refused with who holds it.
    with destination_lock(_prod(world), "someone-else"), pytest.raises(PromotionError) as info:
        promote("dev", "prod", world.root, None, lambda _: None)
    assert info.value.step == "lock" and "someone-else" in str(info.value)
    # Two at the same time, their copies slowed down so that they overlap.
    real_copy = infra.promotion.copy_release

    def slow_copy(*args: Any, **kwargs: Any) -> int:
        time.sleep(2)
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(infra.promotion, "copy_release", slow_copy)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            promote("dev", "prod", world.root, None, lambda _: None)
            outcomes.append("promoted")
        except PromotionError as exc:
            outcomes.append(exc.step)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["lock", "promoted"], outcomes
    world.served.append(rid)
    assert sorted(world.prod_versions().values()) == sorted(world.served)


def test_rollback_pins_the_previous_release_and_history_lists_every_event(world: World) -> None:
    result = CliRunner().invoke(app, ["rollback", "prod", "--yes", "--workdir", str(world.root)])
    assert result.exit_code == 0, result.output
    previous = world.served[-2]
    assert read_pin(world.prod_file).release_id == previous  # type: ignore[union-attr]
    assert world.prod_alias() == next(v for v, r in world.prod_versions().items() if r == previous)
    listed = CliRunner().invoke(app, ["history", "prod", "--json", "--workdir", str(world.root)])
    assert listed.exit_code == 0, listed.output
    events = yaml.safe_load(listed.output)
    assert [(e["kind"], e["release_id"]) for e in events] == [
        *(("promote", rid) for rid in world.served),
        ("rollback", previous),
    ]
    unknown = CliRunner().invoke(
        app, ["rollback", "prod", "--to", "0" * 12, "--yes", "--workdir", str(world.root)]
    )
    assert unknown.exit_code == 1 and "is not in prod's history" in unknown.output
    status = CliRunner().invoke(app, ["status", "--json", "--workdir", str(world.root)])
    assert status.exit_code == 0, status.output
    by_stack = {s["stack"]: s for s in yaml.safe_load(status.output)}
    assert by_stack["prod"]["release_id"] == previous and by_stack["prod"]["mode"] == "pinned"
    assert by_stack["prod"]["lineage"]["dataset_hash"] and by_stack["dev"]["mode"] == "trains"
    assert by_stack["dev"]["aliases"]["champion"] and not by_stack["prod"]["problems"]


def test_the_promoted_prod_stack_renders_and_passes_the_pack(world: World, tmp_path: Path) -> None:
    from policy.rules import check_resources, stack_pack_config

    render = render_stack("prod", tmp_path / "render", world.root)
    pin = read_pin(world.prod_file)
    assert pin is not None
    deployment = render.find("kubernetes:apps/v1:Deployment", "serving-deployment").inputs
    assert deployment["spec"]["template"]["metadata"]["labels"]["mlops.dev/release"] == pin.release_id
    for obj in render.kubernetes_objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    assert check_resources(render.policy_resources(), stack_pack_config("prod")) == []


def test_a_real_engine_preview_of_prod_shows_the_rollout_to_the_promoted_release(
    world: World, tmp_path: Path
) -> None:
    """Prod at its first pin, then the pin the promotions left: `pulumi preview` (render mode)."""
    from infra.stack_file import write_pin
    from tests.engine.conftest import PROD_SECRETS, changed_steps, new_engine, render_mode

    engine = new_engine(tmp_path)
    config = yaml.safe_load(world.prod_file.read_text())["config"]
    engine.write_stack_config("prod", render_mode(config, tmp_path / "rendered"))
    engine.pulumi("stack", "init", "prod").check()
    for key, value in PROD_SECRETS.items():
        engine.pulumi("config", "set", "--secret", key, value, stack="prod").check()
    promoted = read_pin(engine.stack_file("prod"))
    assert promoted is not None
    first_version = next(v for v, r in world.prod_versions().items() if r == world.served[0])
    record = world.prod_s3.client().get_object(
        Bucket=world.prod_bucket, Key=f"{MODEL}/{world.served[0]}/release.json"
    )
    first = promoted.model_copy(
        update={
            "release_id": world.served[0],
            "model_version": first_version,
            "model_sha256": yaml.safe_load(record["Body"].read())["model_sha256"],
        }
    )
    write_pin(engine.stack_file("prod"), first)
    engine.pulumi("up", "--yes", "--skip-preview", stack="prod").check()
    write_pin(engine.stack_file("prod"), promoted)
    changes = changed_steps(engine.preview_json("prod"))
    assert changes == {"kubernetes:apps/v1:Deployment::serving-deployment": {"update"}}, changes
