"""Promotion and rollback: pin a release proven in one stack into a stack that serves pinned releases.

`promote` checks the source release (registered, gates passed, what the source stack serves),
then in this order: takes the destination's lock, copies the release folder to the
destination's artifact store when it is another store (every object verified by SHA-256 after
the copy), registers the release in the destination's registry with its lineage and where it
came from, points the destination's `candidate` alias at it (its `champion` moves when its own
`pulumi up` has rolled it out), records the event in the destination's deployment history,
and finally writes the pin into `Pulumi.<dst>.yaml`. Each step is idempotent, so a re-run after
a failure finishes the job without duplicating anything, and a failure names its step and
leaves the stack file untouched (the pin is written last). `rollback` re-pins a release from
the stack's own history through the same checks.

Everything is read and written where `pulumi up` would: each stack's MLflow at
`mlops:tracking.host_tracking_uri` (or its NodePort) and its bucket at
`mlops:artifacts.endpoint_url`, with the environment's S3 credentials, or per stack
`MLOPS_S3_ACCESS_KEY_ID_<STACK>` and `MLOPS_S3_SECRET_ACCESS_KEY_<STACK>` when the stores differ.
A stack whose MLflow requires a user (`mlops:tracking.auth`, on in prod) is logged in to as
`mlops:tracking.admin_username` with the password in `MLOPS_TRACKING_PASSWORD_<STACK>` (the
value of its secret mlops:tracking_admin_password, which this command never decrypts).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.providers.mlflow_credentials import TrackingCredentials, tracking_client
from infra.config import ConfigError, PinnedRelease, StackSettings, load_stack_file
from infra.history import DeploymentEvent, Kind, current_user, now, read_history, record_event
from infra.stack_file import write_pin
from model.artifact import (
    MODEL_SUBDIR,
    REGISTRATION_FILE,
    RELEASE_FILE,
    ArtifactError,
    IncompleteRelease,
    Registration,
    ReleaseMetadata,
    release_uri,
)
from model.data import S3Access, s3_client, split_s3_uri
from model.errors import RegistryError
from model.registry import (
    CANDIDATE_ALIAS,
    RELEASE_TAG,
    alias_version,
    bound_http_retries,
    find_release,
    register_version,
    registry_call,
    set_alias,
)
from model.release_store import read_marker

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "Plan",
    "PromotionError",
    "StackPlace",
    "dry_run",
    "execute",
    "place_of",
    "plan_promotion",
    "plan_rollback",
    "promote",
    "served_release",
    "stack_s3_credentials",
    "stack_tracking_credentials",
]

LOCK_SECONDS = 15 * 60
"""A lock older than this was left by a promotion that died: the next one may take it over."""
Log = Callable[[str], None]


class PromotionError(RuntimeError):
    """A promotion or rollback stopped; `step` says where, and the stack file is untouched."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class StackPlace:
    """Where a stack's releases live, as seen from here."""

    stack: str
    model_name: str
    tracking_uri: str
    artifact_root: str
    s3: S3Access
    champion_alias: str
    stack_file: Path
    settings: StackSettings = field(repr=False)

    def client(self) -> MlflowClient:
        bound_http_retries()

        return tracking_client(self.tracking_uri, stack_tracking_credentials(self.stack, self.settings))

    def folder(self, release_id: str) -> str:
        return release_uri(self.artifact_root, self.model_name, release_id)

    def same_store(self, other: StackPlace) -> bool:
        return (self.artifact_root, self.s3.endpoint_url) == (other.artifact_root, other.s3.endpoint_url)


def stack_s3_credentials(stack: str) -> tuple[str | None, str | None]:
    """The stack's own S3 keys: MLOPS_S3_ACCESS_KEY_ID_<STACK>, MLOPS_S3_SECRET_ACCESS_KEY_<STACK>."""
    suffix = stack.upper().replace("-", "_")
    return (
        os.environ.get(f"MLOPS_S3_ACCESS_KEY_ID_{suffix}"),
        os.environ.get(f"MLOPS_S3_SECRET_ACCESS_KEY_{suffix}"),
    )


def stack_tracking_credentials(stack: str, settings: StackSettings) -> TrackingCredentials | None:
    """The login to the stack's MLflow when it requires one: mlops:tracking.admin_username and
    MLOPS_TRACKING_PASSWORD_<STACK>. Without the password its registry cannot be used: a
    RegistryError naming the variable (`mlops status` reports it and shows the other stacks)."""
    if not settings.tracking_auth:
        return None
    variable = f"MLOPS_TRACKING_PASSWORD_{stack.upper().replace('-', '_')}"
    password = os.environ.get(variable)
    if not password:
        raise RegistryError(
            f"{stack}'s MLflow requires a user (mlops:tracking.auth in Pulumi.{stack}.yaml): set "
            f"{variable} to the password of {settings.tracking.admin_username!r} (the stack's secret "
            "mlops:tracking_admin_password)"
        )
    return TrackingCredentials(settings.tracking.admin_username, password)


def place_of(stack: str, root: Path) -> StackPlace:
    settings = load_stack_file(stack, root)
    tracking = settings.tracking.host_uri
    if tracking is None:
        raise ConfigError(
            f"Pulumi.{stack}.yaml: promotion reads and writes the stack's registry from here: set "
            "mlops:tracking.host_tracking_uri (or mlops:tracking.node_port, or server_url)"
        )
    assert settings.artifacts is not None  # validated
    key_id, secret = stack_s3_credentials(stack)
    s3 = S3Access(settings.artifacts.endpoint_url, key_id, secret, settings.artifacts.region)
    if settings.training is not None:
        model, alias = settings.training.model_name, settings.training.gates.champion_alias
    else:
        assert settings.release is not None  # validated: exactly one of training / release
        model, alias = settings.release.model_name, settings.release.champion_alias
    return StackPlace(
        stack, model, tracking, f"s3://{settings.artifacts.bucket}", s3, alias,
        root / f"Pulumi.{stack}.yaml", settings,
    )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What a promotion or rollback does (or, with --dry-run, would do)."""

    kind: Kind
    source: StackPlace
    target: StackPlace
    release_id: str
    source_version: str
    metadata: ReleaseMetadata
    source_tags: dict[str, str]
    already_pinned: bool
    """The destination already pins this release: nothing to do."""


# ---- checks -----------------------------------------------------------------------------------


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Name the step a service or config failure happened in."""
    try:
        yield
    except PromotionError:
        raise
    except (RegistryError, ConfigError, OSError) as exc:
        raise PromotionError(name, str(exc)) from exc


def served_release(place: StackPlace) -> tuple[str, str]:
    """(version, release id) under the stack's champion alias in its registry."""
    client = place.client()
    where = f"{place.model_name}@{place.champion_alias} at {place.tracking_uri}"
    version = alias_version(client, place.model_name, place.champion_alias, f"reading {where}")
    if version is None:
        raise RegistryError(
            f"no version of {place.model_name} has the alias {place.champion_alias!r}: "
            f"{place.stack} serves nothing proven yet"
        )
    with registry_call(f"reading {where} (version {version})"):
        tags = client.get_model_version(place.model_name, version).tags or {}
    return version, str(tags.get(RELEASE_TAG, ""))


def _checked_release(place: StackPlace, release_id: str) -> tuple[str, ReleaseMetadata, dict[str, str]]:
    """The version, record and tags of a release registered in `place`, whose gates passed."""
    client = place.client()
    found = find_release(client, place.model_name, release_id)
    if found is None:
        raise PromotionError(
            "check",
            f"release {release_id} of {place.model_name} is not registered at {place.tracking_uri} "
            f"({place.stack}'s registry)",
        )
    try:
        metadata = read_marker(place.folder(release_id), release_id, place.s3)
    except IncompleteRelease as exc:
        raise PromotionError("check", str(exc)) from None
    except ArtifactError as exc:
        raise PromotionError("check", f"release {release_id}: {exc}") from None
    if metadata.release_id != release_id or not metadata.gates_passed:
        raise PromotionError(
            "check",
            f"release {release_id} did not pass its quality gates ({RELEASE_FILE} says "
            f"{metadata.gates.get('passed')!r}): only a release that passed may be pinned",
        )
    actual = _model_checksum(place, release_id)
    if actual != metadata.model_sha256:
        raise PromotionError(
            "check",
            f"the model of release {release_id} in {place.folder(release_id)} has checksum {actual}, "
            f"but {RELEASE_FILE} records {metadata.model_sha256}: refusing a modified or partial release",
        )
    with registry_call(f"reading the tags of {place.model_name} version {found.version}"):
        tags = dict(client.get_model_version(place.model_name, found.version).tags or {})
    return found.version, metadata, tags


def _model_checksum(place: StackPlace, release_id: str) -> str:
    """The release's model folder checksum, computed from the store (model.artifact's formula)."""
    import tempfile

    from model.artifact import ArtifactError, directory_checksum

    bucket, prefix = split_s3_uri(f"{place.folder(release_id)}/{MODEL_SUBDIR}")
    client = s3_client(place.s3)
    with (
        tempfile.TemporaryDirectory(prefix="promote-") as tmp,
        registry_call(f"reading s3://{bucket}/{prefix}"),
    ):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for item in page.get("Contents", []):
                path = Path(tmp, item["Key"][len(prefix) + 1 :])
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(path))
        try:
            return directory_checksum(Path(tmp))
        except ArtifactError as exc:
            raise PromotionError("check", f"s3://{bucket}/{prefix}: {exc}") from exc


def plan_promotion(source: StackPlace, target: StackPlace, release_id: str | None) -> Plan:
    if target.settings.release is None:
        raise PromotionError(
            "check",
            f"{target.stack} trains its own releases (mlops:training): promotion pins a release "
            "into a stack that serves pinned releases (mlops:release)",
        )
    if source.model_name != target.model_name:
        raise PromotionError(
            "check", f"{source.stack} serves {source.model_name}, {target.stack} {target.model_name}"
        )
    with _step("check"):
        served_version, served = served_release(source)
    if release_id is not None and release_id != served:
        raise PromotionError(
            "check",
            f"release {release_id} is not what {source.stack} serves ({source.champion_alias} is "
            f"version {served_version}, release {served}): promote what was proven there",
        )
    with _step("check"):
        version, metadata, tags = _checked_release(source, served)
    pin = target.settings.release
    return Plan("promote", source, target, served, version, metadata, tags, pin.release_id == served)


def plan_rollback(place: StackPlace, to: str | None) -> Plan:
    pin = place.settings.release
    if pin is None:
        raise PromotionError(
            "check", f"{place.stack} trains its own releases: roll back by changing its spec"
        )
    with _step("check"):
        history = read_history(place.artifact_root, place.model_name, place.s3)
    served = [e.release_id for e in history]
    if to is None:
        earlier = [rid for rid in served if rid != pin.release_id]
        if not earlier:
            raise PromotionError("check", f"{place.stack} has served no other release (history: {served})")
        to = earlier[-1]
    elif to not in served:
        raise PromotionError("check", f"release {to} is not in {place.stack}'s history ({', '.join(served)})")
    with _step("check"):
        version, metadata, tags = _checked_release(place, to)
    return Plan("rollback", place, place, to, version, metadata, tags, pin.release_id == to)


# ---- steps ------------------------------------------------------------------------------------


def _lock_name(target: StackPlace) -> str:
    return f"{target.model_name}.promotion-lock"


@contextmanager
def destination_lock(target: StackPlace, owner: str) -> Iterator[None]:
    """One promotion per destination at a time: a lock in the destination's registry.

    The lock is a registered model `<model>.promotion-lock`, which the registry creates only if
    no model has that name (an atomic check), tagged with its owner and expiry. It sits in the
    registry rather than the store so that a store outage mid-copy still releases it: a re-run
    then finishes the job. A lock past its expiry was left by a run that died and is taken over.
    """
    from mlflow.exceptions import MlflowException

    name = _lock_name(target)
    with _step("lock"):
        client = target.client()
    token = hashlib.sha256(f"{owner}{now()}{os.getpid()}{id(client)}".encode()).hexdigest()[:16]
    expires = (datetime.now(UTC) + timedelta(seconds=LOCK_SECONDS)).isoformat()
    tags = {"owner": owner, "token": token, "expires": expires}
    with _step("lock"), registry_call(f"taking the promotion lock {name} at {target.tracking_uri}"):
        try:
            client.create_registered_model(name, tags=tags, description="mlops promote: in progress")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            _take_over_stale_lock(client, name, tags, target)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # an unreleased lock expires after LOCK_SECONDS
            if (client.get_registered_model(name).tags or {}).get("token") == token:
                client.delete_registered_model(name)


def _lock_live(holder: dict[str, str]) -> bool:
    """Whether a lock's holder (its tags) has not expired yet."""
    return datetime.fromisoformat(holder.get("expires", "1970-01-01T00:00:00+00:00")) > datetime.now(UTC)


def _take_over_stale_lock(client: Any, name: str, tags: dict[str, str], target: StackPlace) -> None:
    from mlflow.exceptions import MlflowException

    holder = client.get_registered_model(name).tags or {}
    if _lock_live(holder):
        raise PromotionError(
            "lock",
            f"another promotion to {target.stack} is running (lock {name} at {target.tracking_uri} "
            f"held by {holder.get('owner')} until {holder.get('expires')}); try again when it is done",
        )
    # Expired: remove exactly that lock (its token unchanged), then race for a new one.
    if (client.get_registered_model(name).tags or {}).get("token") == holder.get("token"):
        client.delete_registered_model(name)
    try:
        client.create_registered_model(name, tags=tags, description="mlops promote: in progress")
    except MlflowException as exc:
        raise PromotionError("lock", f"another promotion to {target.stack} just took the lock") from exc


def copy_release(plan: Plan, log: Log, dry_run: bool = False) -> int:
    """Copy the release folder to the target's store, verified by SHA-256; returns objects copied
    (with `dry_run`, the objects that would be)."""
    source, target = plan.source, plan.target
    if source.same_store(target):
        return 0
    src_bucket, src_prefix = split_s3_uri(source.folder(plan.release_id))
    dst_bucket, dst_prefix = split_s3_uri(target.folder(plan.release_id))
    src, dst = s3_client(source.s3), s3_client(target.s3)
    copied = 0
    with (
        _step("copy"),
        registry_call(f"copying {source.folder(plan.release_id)} to {target.folder(plan.release_id)}"),
    ):
        pages = src.get_paginator("list_objects_v2").paginate(Bucket=src_bucket, Prefix=src_prefix + "/")
        relatives = [
            item["Key"][len(src_prefix) + 1 :] for page in pages for item in page.get("Contents", [])
        ]
        # The commit marker last: a copy cut short leaves a folder every reader refuses as incomplete.
        for relative in sorted(relatives, key=lambda rel: rel == RELEASE_FILE):
            if relative == REGISTRATION_FILE:  # the source registry's version, not ours
                continue
            data = src.get_object(Bucket=src_bucket, Key=f"{src_prefix}/{relative}")["Body"].read()
            digest = hashlib.sha256(data).hexdigest()
            key = f"{dst_prefix}/{relative}"
            if _verified(dst, dst_bucket, key, digest):
                continue
            if dry_run:
                copied += 1
                continue
            dst.put_object(Bucket=dst_bucket, Key=key, Body=data, Metadata={"sha256": digest})
            if not _verified(dst, dst_bucket, key, digest):
                raise PromotionError(
                    "copy", f"s3://{dst_bucket}/{key} does not match its source after the copy"
                )
            copied += 1
    verb = "would copy" if dry_run else "copied"
    log(f"{verb} {copied} objects to {target.folder(plan.release_id)} (each verified by SHA-256)")
    return copied


def _verified(client: Any, bucket: str, key: str, digest: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise
    return hashlib.sha256(data).hexdigest() == digest


def register_release(plan: Plan, log: Log, dry_run: bool = False) -> str:
    """The release's version in the target registry, registering it (with lineage) if needed."""
    target, rid = plan.target, plan.release_id
    with _step("register"):
        client = target.client()
        found = find_release(client, target.model_name, rid)
        if dry_run:
            state = f"is version {found.version}" if found else "would be registered"
            log(f"{target.stack}: release {rid} {state} at {target.tracking_uri} ({CANDIDATE_ALIAS} next)")
            return found.version if found else "(new)"
        if found is not None:
            version = found.version
        else:
            lineage = {k: v for k, v in plan.source_tags.items() if k.startswith("mlops.")}
            tags = {
                **lineage,
                "mlops.promoted_from": f"{plan.source.stack}:{plan.source_version}",
                "mlops.promoted_from_registry": plan.source.tracking_uri,
            }
            source = f"{target.folder(rid)}/{MODEL_SUBDIR}"
            version = str(register_version(client, target.model_name, source, None, tags).version)
        _write_registration(target, Registration(target.model_name, rid, version))
        set_alias(client, target.model_name, CANDIDATE_ALIAS, version)
    log(f"{target.stack}: {target.model_name} version {version} is release {rid} ({CANDIDATE_ALIAS})")
    return version


def _write_registration(target: StackPlace, registration: Registration) -> None:
    bucket, key = split_s3_uri(f"{target.folder(registration.release_id)}/{REGISTRATION_FILE}")
    with registry_call(f"writing s3://{bucket}/{key}"):
        s3_client(target.s3).put_object(Bucket=bucket, Key=key, Body=registration.to_json().encode())


def check_lock(target: StackPlace) -> None:
    """Refuse now (as a promotion would) when another promotion to `target` holds its lock."""
    from mlflow.exceptions import MlflowException

    name = _lock_name(target)
    with _step("lock"), registry_call(f"reading the promotion lock {name} at {target.tracking_uri}"):
        try:
            holder = target.client().get_registered_model(name).tags or {}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return
            raise
    if _lock_live(holder):
        raise PromotionError(
            "lock", f"another promotion to {target.stack} is running ({holder.get('owner')})"
        )


def dry_run(plan: Plan, log: Log) -> None:
    """Every check and lookup of `execute`, writing nothing."""
    check_lock(plan.target)
    copy_release(plan, log, dry_run=True)
    register_release(plan, log, dry_run=True)
    log(f"{plan.target.stack_file.name}: mlops:release would pin {plan.release_id}")


def pin_of(plan: Plan, version: str) -> PinnedRelease:
    current = plan.target.settings.release
    assert current is not None
    return PinnedRelease(
        model_name=plan.target.model_name,
        release_id=plan.release_id,
        model_version=version,
        model_sha256=plan.metadata.model_sha256,
        gates="passed",
        champion_alias=current.champion_alias,
    )


def execute(plan: Plan, log: Log) -> PinnedRelease:
    """Run the plan's steps in order; the pin is written last."""
    with destination_lock(plan.target, current_user()):
        copy_release(plan, log)
        version = register_release(plan, log)
        source = (
            f"{plan.source.stack} (version {plan.source_version} at {plan.source.tracking_uri})"
            if plan.kind == "promote"
            else f"{plan.target.stack}'s history"
        )
        event = DeploymentEvent(
            plan.target.stack, plan.kind, plan.release_id, version, source, current_user(), now()
        )
        with _step("history"):
            record_event(plan.target.artifact_root, plan.target.model_name, plan.target.s3, event)
        pin = pin_of(plan, version)
        with _step("pin"):
            changed = write_pin(plan.target.stack_file, pin)
        verb = "now pins" if changed else "already pinned"
        log(f"{plan.target.stack_file.name}: mlops:release {verb} {plan.release_id}")
    return pin


def promote(source: str, target: str, root: Path, release_id: str | None, log: Log) -> Plan:
    """Check and run a promotion (a no-op when the target already pins the release)."""
    plan = plan_promotion(place_of(source, root), place_of(target, root), release_id)
    if not plan.already_pinned:
        execute(plan, log)
    return plan
