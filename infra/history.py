"""A stack's deployment history: one small JSON object per event, in the stack's artifact store.

Promotions and rollbacks append an event (who, when, from where, which release and version)
under `<artifact_root>/<model>/_deployments/`, named so that listing sorts them in time order.
Objects are only ever added, so the history is an audit log a reviewer can list with any S3
tool, and it lives with the artifacts it describes rather than in a file someone might edit.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from model.data import S3Access, s3_client, split_s3_uri
from model.errors import RegistryError
from model.registry import registry_call

__all__ = ["DeploymentEvent", "Kind", "current_user", "read_history", "record_event"]

Kind = Literal["promote", "rollback"]
PREFIX = "_deployments"


@dataclass(frozen=True)
class DeploymentEvent:
    stack: str
    kind: Kind
    release_id: str
    model_version: str
    source: str
    """Where the release came from: `dev (version 3 at http://...)`, or the stack itself."""
    by: str
    at: str
    """UTC, ISO 8601 with microseconds: sorts like time."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def current_user() -> str:
    """Who acts: the CI actor when there is one, else the local user."""
    return os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or getpass.getuser()


def _location(artifact_root: str, model_name: str) -> tuple[str, str]:
    bucket, prefix = split_s3_uri(artifact_root)
    return bucket, "/".join(p for p in (prefix.strip("/"), model_name, PREFIX) if p) + "/"


def read_history(artifact_root: str, model_name: str, access: S3Access) -> list[DeploymentEvent]:
    """Every recorded event of the stack whose artifacts live at `artifact_root`, oldest first."""
    bucket, prefix = _location(artifact_root, model_name)
    client = s3_client(access)
    events: list[DeploymentEvent] = []
    with registry_call(f"reading the deployment history at s3://{bucket}/{prefix}"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                events.append(_event(json.loads(body), item["Key"]))
    return sorted(events, key=lambda e: e.at)


def _event(raw: dict[str, Any], key: str) -> DeploymentEvent:
    try:
        return DeploymentEvent(**raw)
    except TypeError as exc:
        raise RegistryError(f"deployment history entry {key} is not an event: {exc}") from exc


def record_event(
    artifact_root: str, model_name: str, access: S3Access, event: DeploymentEvent
) -> DeploymentEvent:
    """Append `event`, unless the latest event already records the same change (a re-run)."""
    history = read_history(artifact_root, model_name, access)
    last = history[-1] if history else None
    if last and (last.kind, last.release_id, last.model_version) == (
        event.kind,
        event.release_id,
        event.model_version,
    ):
        return last
    bucket, prefix = _location(artifact_root, model_name)
    key = f"{prefix}{event.at.replace(':', '-')}-{event.kind}-{event.release_id}.json"
    with registry_call(f"recording the {event.kind} of {event.release_id} at s3://{bucket}/{key}"):
        s3_client(access).put_object(Bucket=bucket, Key=key, Body=event.to_json().encode())
    return event


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
