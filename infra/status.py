"""`mlops status`: what each stack serves, with its lineage, its aliases and its deployment history.

Read from where `pulumi up` reads: the stack file (a pinned release), the stack's registry (its
aliases; for a training stack, the release `champion` names) and its artifact store (the
release record and the history). A registry or store that cannot be reached is reported in the
status, not raised: the other stacks still show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from infra.config import ConfigError
from infra.history import DeploymentEvent, read_history
from infra.promotion import PromotionError, StackPlace, place_of, served_release
from model.artifact import ArtifactError
from model.errors import RegistryError
from model.registry import registry_call
from model.release_store import read_marker

__all__ = ["StackStatus", "stack_status"]


@dataclass(frozen=True)
class StackStatus:
    stack: str
    mode: Literal["trains", "pinned"]
    model_name: str
    release_id: str | None
    model_version: str | None
    gates: str | None
    lineage: dict[str, str | None] = field(default_factory=dict)
    """dataset_uri, dataset_hash, code_hash, git_commit of the release (from its release.json)."""
    aliases: dict[str, str] = field(default_factory=dict)
    history: list[DeploymentEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stack_status(stack: str, root: Path) -> StackStatus:
    place = place_of(stack, root)
    problems: list[str] = []
    pin = place.settings.release
    gates: str | None
    if pin is not None:
        mode: Literal["trains", "pinned"] = "pinned"
        release_id, version, gates = pin.release_id, pin.model_version, pin.gates
    else:
        mode, release_id, version, gates = "trains", None, None, None
        try:
            version, release_id = served_release(place)
        except (RegistryError, PromotionError) as exc:
            problems.append(str(exc))
    aliases = _aliases(place, problems)
    lineage: dict[str, str | None] = {}
    if release_id:
        lineage, recorded = _lineage(place, release_id, problems)
        gates = gates or recorded
    try:
        history = read_history(place.artifact_root, place.model_name, place.s3)
    except RegistryError as exc:
        history = []
        problems.append(str(exc))
    return StackStatus(
        stack, mode, place.model_name, release_id, version, gates, lineage, aliases, history, problems
    )


def _aliases(place: StackPlace, problems: list[str]) -> dict[str, str]:
    try:
        with registry_call(f"reading the aliases of {place.model_name} at {place.tracking_uri}"):
            model = place.client().get_registered_model(place.model_name)
    except RegistryError as exc:
        problems.append(str(exc))
        return {}
    return {str(alias): str(version) for alias, version in sorted((model.aliases or {}).items())}


def _lineage(
    place: StackPlace, release_id: str, problems: list[str]
) -> tuple[dict[str, str | None], str | None]:
    try:
        record = read_marker(place.folder(release_id), release_id, place.s3)
    except (RegistryError, ArtifactError) as exc:
        problems.append(str(exc))
        return {}, None
    keys = ("dataset_uri", "dataset_hash", "code_hash", "git_commit")
    return {k: getattr(record, k) for k in keys}, "passed" if record.gates_passed else "failed"


def stacks_in(root: Path) -> list[str]:
    names = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
    if not names:
        raise ConfigError(f"no Pulumi.<stack>.yaml in {root}")
    return names
