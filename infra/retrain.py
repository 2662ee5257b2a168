"""`mlops retrain-bump`: after a drift alert, point a training stack at its newest dataset version.

The retrain workflow (.github/workflows/retrain.yml) runs it on the `repository_dispatch` event
the retrain trigger (model/retrain_trigger.py) sent. It lists the dataset files under the stack's
`mlops:monitoring.retrain.dataset_prefix` (an s3:// prefix or a folder), takes the newest one,
reads it (it must load and hold the spec's target column), and only then writes it into
`Pulumi.<stack>.yaml`'s `mlops:training.dataset` (infra.stack_file.write_dataset: comments kept,
no other line changes). When nothing newer than the current dataset exists, nothing is written
and the workflow opens no pull request.

"Newest" is the greatest name, with digits compared as numbers: `2025-06-02.csv` after
`2025-06-01.csv`, `v10/data.parquet` after `v9/data.parquet`. Names, not modification times,
because a copy or a restore of the bucket changes the times but not the versions the names say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.config import StackSettings, load_stack_file
from infra.promotion import stack_s3_credentials
from infra.stack_file import TRAINING_KEY, write_dataset
from model.data import DatasetError, DatasetIdentity, S3Access, list_dataset_files, load_dataset
from model.errors import BadConfig
from model.retrain_trigger import EVENT_TYPE, RetrainPayload, describe_validation

__all__ = ["Bump", "RetrainError", "bump_from_event", "dataset_versions", "newest_version", "read_event"]

# A key that may travel into a stack file, a branch's commit and a pull request's title.
_SAFE_NAME = re.compile(r"^[^\x00-\x1f\x7f`|]+$")


class RetrainError(BadConfig):
    """The event, the stack's retrain settings or the new dataset cannot work as given (exit 2)."""


@dataclass(frozen=True)
class Bump:
    """What one `retrain-bump` found, and the pull request it asks for."""

    stack: str
    stack_file: Path
    payload: RetrainPayload
    previous: str
    dataset: str | None
    """The newest version, checked readable; None when nothing is newer than `previous`."""
    identity: DatasetIdentity | None = None
    written: bool = False
    """False with --dry-run, or when there was nothing to write."""

    @property
    def changed(self) -> bool:
        return self.dataset is not None

    @property
    def branch(self) -> str:
        return f"retrain/{self.stack}/{self.payload.model_name}"

    @property
    def title(self) -> str:
        p, name = self.payload, (self.dataset or "").rsplit("/", 1)[-1]
        return f"Retrain {p.model_name} on {name} ({self.stack}, drift in release {p.release_id})"

    @property
    def message(self) -> str:
        if not self.changed:
            return f"nothing newer than {self.previous} under the dataset prefix: no change"
        verb = "now trains on" if self.written else "would train on"
        return f"{self.stack_file.name}: {TRAINING_KEY}.dataset {verb} {self.dataset} (was {self.previous})"

    def body(self) -> str:
        p = self.payload
        features = ", ".join(f"`{_cell(f)}`" for f in p.features) or "(the alert named none)"
        identity = self.identity
        size = f"{identity.rows} rows, sha256 `{identity.content_hash[:12]}`" if identity else ""
        lines = [
            f"## Retrain `{p.model_name}` on a newer dataset",
            "",
            f"The drift alert for release `{p.release_id}` of `{p.model_name}` fired, and the retrain "
            f"trigger asked for this change. Merging it trains, gates and rolls out a new release on "
            f"`{self.stack}`; the preview on this pull request shows the new training Job and the rollout.",
            "",
            "| | |",
            "| --- | --- |",
            f"| model | `{p.model_name}` |",
            f"| drifting release | `{p.release_id}` (namespace `{p.namespace}`) |",
            f"| drifting features | {features} |",
            f"| alert | fingerprint `{p.fingerprint}`, firing since {p.starts_at.isoformat()} |",
            f"| dataset before | `{_cell(self.previous)}` |",
            f"| dataset now | `{_cell(self.dataset or '')}` ({size}) |",
            "",
        ]
        if p.summary:
            lines += ["Alert summary:", "", "```text", p.summary.replace("`", "'"), "```", ""]
        lines.append(f"Only `{TRAINING_KEY}.dataset` in `{self.stack_file.name}` changes.")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "written": self.written,
            "stack": self.stack,
            "model_name": self.payload.model_name,
            "previous": self.previous,
            "dataset": self.dataset,
            "branch": self.branch,
            "title": self.title,
            "body": self.body() if self.changed else "",
            "message": self.message,
        }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def read_event(path: Path) -> RetrainPayload:
    """The client payload of a `repository_dispatch` event file (GITHUB_EVENT_PATH)."""
    try:
        event = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RetrainError(f"cannot read the event {path}: {exc}") from None
    action = event.get("action") if isinstance(event, dict) else None
    if action != EVENT_TYPE:
        raise RetrainError(f"{path} is not a repository_dispatch {EVENT_TYPE} event (action {action!r})")
    try:
        return RetrainPayload.model_validate(event.get("client_payload"))
    except ValidationError as exc:
        raise RetrainError(f"{path}: client_payload: {describe_validation(exc, limit=10)}") from None


def _access(settings: StackSettings) -> S3Access:
    """The stack's S3 endpoint, with MLOPS_S3_*_<STACK> credentials when set (as promotion reads them)."""
    key_id, secret = stack_s3_credentials(settings.stack)
    ambient = settings.dataset_access
    if key_id and secret:
        return replace(ambient, access_key_id=key_id, secret_access_key=secret)
    return ambient


def _version_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Digits compare as numbers, the rest as text: v9 < v10, 2025-06-01 < 2025-06-02."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


def dataset_versions(prefix: str, access: S3Access) -> list[str]:
    """Every dataset file (URI) under `prefix`, oldest version first."""
    base = prefix if prefix.endswith("/") else prefix + "/"
    try:
        uris = list_dataset_files(base, access)
    except DatasetError as exc:
        raise RetrainError(f"cannot list the dataset prefix: {exc}") from None
    usable = [uri for uri in uris if _SAFE_NAME.match(uri[len(base) :])]
    return sorted(usable, key=lambda uri: _version_key(uri[len(base) :]))


def newest_version(versions: list[str], prefix: str, current: str) -> str | None:
    """The newest of `versions` if it is newer than `current` (a dataset outside the prefix is older)."""
    if not versions:
        return None
    newest = versions[-1]
    base = prefix if prefix.endswith("/") else prefix + "/"
    if current.startswith(base) and _version_key(newest[len(base) :]) <= _version_key(current[len(base) :]):
        return None
    return newest


def _retrain_settings(stack: str, root: Path, payload: RetrainPayload) -> tuple[StackSettings, str]:
    settings = load_stack_file(stack, root)
    where = f"Pulumi.{stack}.yaml"
    retrain = settings.monitoring.retrain
    if settings.training is None:
        raise RetrainError(f"{where} has no {TRAINING_KEY}: only a training stack can retrain")
    if not retrain.enabled or retrain.dataset_prefix is None:
        raise RetrainError(
            f"{where}: mlops:monitoring.retrain is not enabled with a dataset_prefix, so this stack does "
            "not retrain on drift; set mlops:monitoring.retrain.enabled: true and dataset_prefix "
            "(docs/retraining.md)"
        )
    if payload.model_name != settings.training.model_name:
        raise RetrainError(
            f"the alert is for model {payload.model_name!r}; {where} trains {settings.training.model_name!r}"
        )
    return settings, retrain.dataset_prefix


def bump_from_event(event: Path, root: Path, stack: str | None = None, dry_run: bool = False) -> Bump:
    """Read the event, find the newest dataset, check it, and write it (unless `dry_run`)."""
    payload = read_event(event)
    if stack is not None and stack != payload.stack:
        raise RetrainError(f"the alert names stack {payload.stack!r}, not {stack!r}")
    settings, prefix = _retrain_settings(payload.stack, root, payload)
    assert settings.training is not None  # checked above
    current = settings.training.dataset
    access = _access(settings)
    newest = newest_version(dataset_versions(prefix, access), prefix, current)
    stack_file = root / f"Pulumi.{payload.stack}.yaml"
    if newest is None:
        return Bump(payload.stack, stack_file, payload, current, None)
    try:
        identity = load_dataset(newest, access).identity
        identity.check_target(settings.training.target)
    except DatasetError as exc:
        raise RetrainError(f"the newest dataset cannot be trained on, nothing written: {exc}") from None
    written = False if dry_run else write_dataset(stack_file, newest)
    return Bump(payload.stack, stack_file, payload, current, newest, identity, written)
