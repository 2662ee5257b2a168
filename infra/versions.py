"""`mlops delete-version`: remove a model version from a stack's registry, never one still in use.

A version is in use while an alias of its model points at it (`champion` is served, `candidate`
is next), or while a stack file of this project that uses the same registry pins it
(`mlops:release`, or a canary's `mlops:serving.canary.release`), by its number or by its release
id. A pin whose registry cannot be told from here (no `mlops:tracking.host_tracking_uri`)
counts as in use. Only the registry entry is deleted: the release folder stays in the artifact
store as it is, since it is immutable, may be what another stack's registry (a promotion into
the same store) or the deployment history names, and a re-run of that release adopts it
instead of training into it again.

The check and the delete are two registry calls: aliases are checked again right before the
delete, but run it when no release, promotion or `pulumi up` is moving aliases of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.config import ConfigError, PinnedRelease, StackSettings, load_stack_file
from infra.promotion import StackPlace, place_of
from model.registry import RELEASE_TAG, find_version, registry_call

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["Deletion", "VersionInUse", "VersionNotFound", "delete_version", "plan_deletion"]


class VersionInUse(RuntimeError):
    """An alias or a stack file points at the version: it is not deleted."""

    def __init__(self, deletion: Deletion, users: list[str]) -> None:
        super().__init__(
            f"refusing to delete {deletion.model_name} version {deletion.version} "
            f"(release {deletion.release_id or 'unknown'}) at {deletion.tracking_uri}: " + "; ".join(users)
        )
        self.users = users


class VersionNotFound(RuntimeError):
    """The registry has no such version."""


@dataclass(frozen=True)
class Deletion:
    stack: str
    model_name: str
    version: str
    release_id: str | None
    tracking_uri: str
    source: str
    """Where the version's model lives; kept."""


def plan_deletion(stack: str, version: str, root: Path) -> Deletion:
    """The version to delete, checked: `VersionInUse` names everyone who points at it."""
    if not version.isdigit():
        raise ConfigError(f"--version must be a model version number, got {version!r}")
    place = place_of(stack, root)
    found = find_version(place.client(), place.model_name, version)
    if found is None:
        raise VersionNotFound(f"{place.model_name} has no version {version} at {place.tracking_uri}")
    tags = found.tags or {}
    deletion = Deletion(
        stack, place.model_name, version, tags.get(RELEASE_TAG), place.tracking_uri, str(found.source)
    )
    users = [f"alias {alias!r} points at it" for alias in sorted(found.aliases or [])]
    users += _pins(place, root, deletion)
    if users:
        raise VersionInUse(deletion, users)
    return deletion


def delete_version(deletion: Deletion, root: Path) -> None:
    """Delete the planned version, after checking again that nobody points at it."""
    deletion = plan_deletion(deletion.stack, deletion.version, root)
    client: MlflowClient = place_of(deletion.stack, root).client()
    where = f"deleting {deletion.model_name} version {deletion.version} at {deletion.tracking_uri}"
    with registry_call(where):
        client.delete_model_version(deletion.model_name, deletion.version)


def _pins(place: StackPlace, root: Path, deletion: Deletion) -> list[str]:
    """Stack files that pin the version in this registry (or in one that cannot be told apart)."""
    users = []
    for path in sorted(root.glob("Pulumi.*.yaml")):
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        settings = place.settings if name == place.stack else load_stack_file(name, root)
        registry = settings.tracking.host_uri
        if registry is not None and registry.rstrip("/") != place.tracking_uri.rstrip("/"):
            continue
        for key, pin in _pinned(settings):
            if pin.model_name != deletion.model_name:
                continue
            if pin.model_version == deletion.version or pin.release_id == deletion.release_id:
                pinned = f"{key}: release {pin.release_id}, version {pin.model_version}"
                unknown = "" if registry else " (its registry is not known here: it may be this one)"
                users.append(f"{path.name} pins it ({pinned}){unknown}")
    return users


def _pinned(settings: StackSettings) -> list[tuple[str, PinnedRelease]]:
    pins = [("mlops:release", settings.release)] if settings.release else []
    if settings.serving.canary is not None:
        pins.append(("mlops:serving.canary.release", settings.serving.canary.release))
    return pins
