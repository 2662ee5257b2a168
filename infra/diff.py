"""`mlops diff`: what a change does to a stack, read from two renders of it, like `pulumi preview`.

Both sides are `mlops render` results (the program under Pulumi's mocks, credential-free): the
working tree against a git revision (rendered by that revision's own code) or a saved render
folder. Each resource is classified the way the engine and its provider would classify it:

* a resource only on one side is created or deleted (identity: its URN, type chain and name);
* `ignore_changes` paths are reset to the old value first, as the engine does before `Diff`;
* Kubernetes objects replace on the provider's force-new fields (pulumi-kubernetes v4,
  `provider/pkg/provider/diff.go`): `metadata.name`/`namespace`, a Job's template and
  selector, a Deployment's selector, a Service's clusterIP, ConfigMap and Secret data unless
  the provider allows mutating them, ...; replacing the Kubernetes provider replaces them all;
* our dynamic resources ask their own providers' `diff` (components/providers/);
* anything else with different inputs is an update.

Secret values never reach a render (they are masked there), so no output here can show one;
for the same reason a changed secret value is not a change here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import yaml

from components.providers.model_alias import MLOPS_KIND as MODEL_ALIAS_KIND
from components.providers.model_alias import ModelAliasProvider
from components.providers.release_record import MLOPS_KIND as RELEASE_RECORD_KIND
from components.providers.release_record import ReleaseRecordProvider
from components.providers.s3_bucket import MLOPS_KIND as S3_BUCKET_KIND
from components.providers.s3_bucket import S3BucketProvider
from infra.render import DYNAMIC_TYPE, RenderedResource, RenderResult

if TYPE_CHECKING:
    pass

__all__ = [
    "ACTIONS",
    "DiffError",
    "PlanDiff",
    "PropertyChange",
    "ReleaseChange",
    "ResourceChange",
    "diff_renders",
]

Action = Literal["create", "update", "replace", "delete"]
ACTIONS: tuple[Action, ...] = ("replace", "create", "update", "delete")
"""Display order: what destroys something first."""

RELEASE_LABEL = "mlops.dev/release"
_K8S_PROVIDER = "pulumi:providers:kubernetes"
_CONFIG_MAP = "ConfigMap"
# The training spec ConfigMap's keys (components/training.py): what the release is made of.
_SPEC_KEY, _EXPECTED_KEY = "spec.yaml", "expected.json"


class DiffError(RuntimeError):
    """A diff that cannot be made; the one-line message names what failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class PropertyChange:
    path: str
    """Pulumi property path; list items that have a `name` are keyed by it: `env[MLOPS_MODEL_URI]`."""
    kind: Literal["add", "remove", "change"]
    before: Any = None
    after: Any = None
    replaces: bool = False
    """This change alone forces a replacement."""


@dataclass(frozen=True)
class ResourceChange:
    action: Action
    urn: str
    """`<parent types>$<type>::<name>`: the resource's identity, as in its Pulumi URN."""
    type: str
    name: str
    parent: str | None
    kind: str
    """Kubernetes kind (`Job`), dynamic provider kind (`model-alias`), else the type."""
    describes: str
    """What it is for a reader: `Job mlops-dev/train-…`, `alias breast-cancer@champion`."""
    replaced_by: tuple[str, ...] = ()
    """Why a replacement: the force-new fields or provider keys that changed, or `provider`."""
    changes: tuple[PropertyChange, ...] = ()


@dataclass(frozen=True)
class ReleaseChange:
    """The stack outputs `release_id` and `model_version`, and what the new release is made of."""

    before: str | None
    after: str | None
    model_version_before: str | None
    model_version_after: str | None
    trains: bool
    """The stack trains the release itself: its model version is whatever the Job registers."""
    dataset: str | None = None
    dataset_sha256: str | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def line(self) -> str:
        """`release a1b2c3d4e5f6 -> 0f9e8d7c6b5a, model version ...`."""
        if self.after is None:
            return "release: none"
        release = f"release {self.before} -> {self.after}" if self.changed else f"release {self.after}"
        if self.trains:
            version = f"model version: registered by train-{self.after}"
        elif self.model_version_before != self.model_version_after and self.changed:
            version = f"model version {self.model_version_before} -> {self.model_version_after}"
        else:
            version = f"model version {self.model_version_after}"
        return f"{release}{'' if self.changed else ' (unchanged)'}, {version}"


@dataclass(frozen=True)
class PlanDiff:
    stack: str
    release: ReleaseChange
    summary: str
    """One line a reviewer understands: the new release and what it moves, then anything else."""
    resources: tuple[ResourceChange, ...]
    outputs: tuple[PropertyChange, ...]
    against: str = ""
    """What the stack was compared with (a git revision, a folder), as shown in the header."""

    @property
    def has_changes(self) -> bool:
        return bool(self.resources or self.outputs)

    @property
    def counts(self) -> dict[str, int]:
        found = {a: sum(1 for r in self.resources if r.action == a) for a in ACTIONS}
        return {a: n for a, n in found.items() if n}

    def plan_line(self) -> str:
        if not self.resources:
            return "Plan: no resource changes" + (" (stack outputs change)" if self.outputs else "")
        return "Plan: " + ", ".join(f"{n} to {action}" for action, n in self.counts.items())


# ---------------------------------------------------------------------------------------------
# Property paths and value diffs


@dataclass(frozen=True)
class _Named:
    """A list item keyed by its `name` (containers, env, volumes, ports)."""

    name: str


_Element = str | int | _Named
_MISSING: Any = object()


def format_path(path: tuple[_Element, ...]) -> str:
    out = ""
    for element in path:
        if isinstance(element, _Named):
            out += f"[{element.name}]"
        elif isinstance(element, int):
            out += f"[{element}]"
        elif re.fullmatch(r"[A-Za-z0-9_]+", element):
            out += f".{element}" if out else element
        else:
            out += '["' + element.replace('"', '\\"') + '"]'
    return out


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    named = {
        item["name"]: item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    return named if len(named) == len(items) else None


def _value_changes(before: Any, after: Any, path: tuple[_Element, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """(path, before, after) of every leaf that differs; _MISSING for an absent side."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys(), key=str):
            yield from _value_changes(before.get(key, _MISSING), after.get(key, _MISSING), (*path, key))
        return
    if isinstance(before, list) and isinstance(after, list):
        old, new = _by_name(before), _by_name(after)
        if old is not None and new is not None and (old or new):
            for name in [*new, *(n for n in old if n not in new)]:
                yield from _value_changes(
                    old.get(name, _MISSING), new.get(name, _MISSING), (*path, _Named(name))
                )
            order = [n for n in old if n in new], [n for n in new if n in old]
            if order[0] != order[1]:  # a reorder is a change too: the provider compares by index
                yield path, order[0], order[1]
            return
        if len(before) == len(after) and all(isinstance(i, dict) for i in before + after):
            for index, (b, a) in enumerate(zip(before, after, strict=True)):
                yield from _value_changes(b, a, (*path, index))
            return
    yield path, before, after


def _parse_pulumi_path(text: str) -> list[str | int]:
    """`data.git_commit`, `spec.containers[0].image`, `metadata.labels["a.b/c"]`, `a[*].b`."""
    elements: list[str | int] = []
    for index, quoted, name in re.findall(r'\[(\d+|\*)\]|\["((?:[^"\\]|\\.)*)"\]|([^.\[\]]+)', text):
        if index:
            elements.append("*" if index == "*" else int(index))
        elif quoted:
            elements.append(quoted.replace('\\"', '"'))
        else:
            elements.append(name)
    return elements


def _reset(path: list[str | int], old: Any, new: Any) -> None:
    """Put old's value at `path` into `new` (in place), like the engine's `PropertyPath.Reset`."""
    key, rest = path[0], path[1:]
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old.keys() | new.keys()) if key == "*" else [key]
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        keys = list(range(len(new))) if key == "*" else [key] if isinstance(key, int) else []
    else:
        return
    for k in keys:
        if isinstance(new, dict):
            if rest and k in old and k in new:
                _reset(rest, old[k], new[k])
            elif not rest and k in old:
                new[k] = copy.deepcopy(old[k])
            elif not rest:
                new.pop(k, None)  # absent from the state: stays absent
        elif isinstance(k, int) and k < len(new):
            if rest:
                _reset(rest, old[k], new[k])
            else:
                new[k] = copy.deepcopy(old[k])


def _ignoring(before: RenderedResource, after: RenderedResource) -> dict[str, Any]:
    """The new inputs with every `ignore_changes` path taken from the old ones."""
    inputs = copy.deepcopy(after.inputs)
    for path in after.ignore_changes:
        if elements := _parse_pulumi_path(path):
            _reset(elements, before.inputs, inputs)
    return inputs


def _property_changes(
    before: dict[str, Any], after: dict[str, Any], replaces: Callable[[tuple[_Element, ...], Any], bool]
) -> tuple[PropertyChange, ...]:
    changes = []
    for path, old, new in _value_changes(before, after):
        kind: Literal["add", "remove", "change"] = (
            "add" if old is _MISSING else "remove" if new is _MISSING else "change"
        )
        changes.append(
            PropertyChange(
                path=format_path(path),
                kind=kind,
                before=None if old is _MISSING else old,
                after=None if new is _MISSING else new,
                replaces=replaces(path, None if new is _MISSING else new),
            )
        )
    return tuple(changes)


# ---------------------------------------------------------------------------------------------
# Kubernetes: the provider's force-new fields


def _words(text: str) -> list[str]:
    return text.split()


def _fields(*paths: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(p.replace("[*]", ".*").split(".")) for p in paths)


_CONTAINER = _words(
    "args command env image imagePullPolicy lifecycle livenessProbe ports readinessProbe resources "
    "securityContext stdin stdinOnce terminationMessagePath terminationMessagePolicy tty volumeDevices "
    "volumeMounts workingDir"
)
_POD = _words(
    "affinity automountServiceAccountToken dnsConfig dnsPolicy enableServiceLinks hostAliases hostIPC "
    "hostNetwork hostPID hostname imagePullSecrets nodeName nodeSelector overhead preemptionPolicy "
    "priority priorityClassName readinessGates restartPolicy runtimeClassName schedulerName "
    "securityContext serviceAccount serviceAccountName shareProcessNamespace subdomain "
    "terminationGracePeriodSeconds volumes"
)
_PV = _words(
    "awsElasticBlockStore azureDisk azureFile cephfs cinder csi fc flexVolume flocker gcePersistentDisk "
    "glusterfs hostPath iscsi local nfs photonPersistentDisk portworxVolume quobyte rbd scaleIO "
    "storageos vsphereVolume"
)
_APPS = {
    "DaemonSet": _fields("spec.selector"),
    "Deployment": _fields("spec.selector"),
    "StatefulSet": _fields(
        "spec.podManagementPolicy", "spec.revisionHistoryLimit", "spec.selector", "spec.serviceName",
        "spec.volumeClaimTemplates",
    ),
}  # fmt: skip
_CORE = {
    "PersistentVolume": _fields(*(f"spec.{f}" for f in _PV)),
    "PersistentVolumeClaim": _fields(
        "spec.accessModes", "spec.selector", "spec.storageClassName", "spec.volumeName"
    ),
    "Pod": _fields(
        *(f"spec.{f}" for f in _POD),
        *(f"spec.{c}[*].{f}" for c in ("containers", "initContainers") for f in _CONTAINER),
    ),
    "ResourceQuota": _fields("spec.scopes"),
    "Secret": _fields("type"),
    "Service": _fields("spec.clusterIP"),
}
_BINDING = {"ClusterRoleBinding": _fields("roleRef"), "RoleBinding": _fields("roleRef")}
_JOB_FIELDS = {"Job": _fields("spec.completions", "spec.parallelism", "spec.selector", "spec.template")}
# pulumi-kubernetes v4 `forceNew` (provider/pkg/provider/diff.go): group -> version -> kind -> fields.
_FORCE_NEW: dict[str, dict[str, dict[str, tuple[tuple[str, ...], ...]]]] = {
    "apps": {"v1beta1": {"StatefulSet": _APPS["StatefulSet"]}, "v1beta2": _APPS, "v1": _APPS},
    "": {"v1": _CORE},
    "policy": {"v1beta1": {"PodDisruptionBudget": _fields("spec")}},
    "rbac.authorization.k8s.io": {"v1alpha1": _BINDING, "v1beta1": _BINDING, "v1": _BINDING},
    "storage.k8s.io": {"v1": {"StorageClass": _fields("parameters", "provisioner")}},
    "batch": {"v1beta1": _JOB_FIELDS, "v1": _JOB_FIELDS, "v2alpha1": _JOB_FIELDS},
}


def _flag(provider: dict[str, Any], key: str) -> bool:
    return provider.get(key) in (True, "true")


def force_new_fields(
    obj: dict[str, Any], provider: dict[str, Any], patch: bool = False
) -> list[tuple[str, ...]]:
    """The fields whose change replaces this object, as the Kubernetes provider decides it."""
    fields = list(_fields("metadata.name", "metadata.namespace"))
    if patch:  # Patch resources update everything else in place
        return fields
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    kinds = _FORCE_NEW.get("" if group == "core" else group, {}).get(version)
    if kinds is None:
        return fields
    kind, immutable = obj.get("kind"), obj.get("immutable") is True
    if kind == "Secret" and not (_flag(provider, "enableSecretMutable") and not immutable):
        return fields + list(_fields("type", "stringData", "data"))
    if kind in kinds:
        return fields + list(kinds[str(kind)])
    if kind == _CONFIG_MAP and not (_flag(provider, "enableConfigMapMutable") and not immutable):
        fields += _fields("binaryData", "data")
    return fields


def _touches(path: tuple[_Element, ...], value: Any, fields: list[tuple[str, ...]]) -> str | None:
    """The force-new field a change at `path` (new value `value`) touches, if any."""
    for f in fields:
        head = f[: len(path)]
        if not all(_same(p, e) for p, e in zip(path, head, strict=False)):
            continue
        if len(f) <= len(path) or _holds(value, f[len(path) :]):
            return ".".join(f).replace(".*", "[*]")
    return None


def _same(element: _Element, field_part: str) -> bool:
    return (field_part == "*" and not isinstance(element, str)) or element == field_part


def _holds(value: Any, rest: tuple[str, ...]) -> bool:
    if not rest:
        return True
    if rest[0] == "*":
        return isinstance(value, list) and any(_holds(v, rest[1:]) for v in value)
    return isinstance(value, dict) and rest[0] in value and _holds(value[rest[0]], rest[1:])


def _describe_object(before: dict[str, Any] | None, after: dict[str, Any], fallback: str) -> str:
    """`Deployment mlops-dev/breast-cancer-stable`; a renamed object shows `old -> new`."""
    meta = after.get("metadata") or {}
    name = meta.get("name") or fallback
    old = ((before or {}).get("metadata") or {}).get("name") or fallback
    shown = f"{old} -> {name}" if before is not None and old != name else name
    return (
        f"{after.get('kind')} {meta['namespace']}/{shown}"
        if meta.get("namespace")
        else f"{after.get('kind')} {shown}"
    )


# ---------------------------------------------------------------------------------------------
# Dynamic resources and the Kubernetes provider


def dynamic_kind(inputs: dict[str, Any]) -> str | None:
    """Which of our dynamic providers manages a resource (its inputs' shape, as the mocks tell)."""
    if kind := inputs.get("mlops_kind"):
        return str(kind)
    if "release_uri" in inputs:
        return RELEASE_RECORD_KIND
    if "alias" in inputs and "tracking_uri" in inputs:
        return MODEL_ALIAS_KIND
    if "bucket_name" in inputs:
        return S3_BUCKET_KIND
    return None


_DYNAMIC_PROVIDERS: dict[str, Callable[[], Any]] = {
    MODEL_ALIAS_KIND: ModelAliasProvider,
    RELEASE_RECORD_KIND: ReleaseRecordProvider,
    S3_BUCKET_KIND: S3BucketProvider,
}


def _describe_dynamic(kind: str | None, inputs: dict[str, Any]) -> str:
    if kind == MODEL_ALIAS_KIND:
        return f"alias {inputs.get('model_name')}@{inputs.get('alias')}"
    if kind == RELEASE_RECORD_KIND:
        return f"release record {inputs.get('model_name')}/{inputs.get('release_id')}"
    if kind == S3_BUCKET_KIND:
        return f"bucket {inputs.get('bucket_name')}"
    return "dynamic resource"


def _provider_replaces(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The Kubernetes provider's DiffConfig: which config changes replace it (and its objects)."""
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    if "clusterIdentifier" in old and "clusterIdentifier" in new and "clusterIdentifier" not in changed:
        return []  # a stable identifier says it is the same cluster
    replaces = sorted(changed & {"renderYamlToDirectory", "clusterIdentifier"})
    if "kubeconfig" in old and "kubeconfig" in new:
        # The active cluster of a kubeconfig can only change through these keys (masked here).
        replaces += sorted(changed & {"kubeconfig", "context", "cluster"})
    return replaces


# ---------------------------------------------------------------------------------------------
# Comparing two renders


def _urns(render: RenderResult) -> dict[str, RenderedResource]:
    by_ref = {f"{r.type}::{r.name}": r for r in render.resources}
    found = {}
    for resource in render.resources:
        types, parent = [resource.type], resource.parent
        while parent in by_ref:
            types.insert(0, by_ref[parent].type)
            parent = by_ref[parent].parent
        found[f"{'$'.join(types)}::{resource.name}"] = resource
    return found


def _kubernetes_provider(render: RenderResult) -> dict[str, Any]:
    providers = [r.inputs for r in render.resources if r.type == _K8S_PROVIDER]
    return providers[0] if len(providers) == 1 else {}


def _kind(resource: RenderedResource) -> str:
    if resource.type.startswith("kubernetes:") and "kind" in resource.inputs:
        return str(resource.inputs["kind"])
    if resource.type == DYNAMIC_TYPE:
        return dynamic_kind(resource.inputs) or "dynamic"
    return resource.type


def _describe(resource: RenderedResource, before: RenderedResource | None = None) -> str:
    kind = _kind(resource)
    if resource.type.startswith("kubernetes:") and "kind" in resource.inputs:
        return _describe_object(before.inputs if before else None, resource.inputs, resource.name)
    if resource.type == DYNAMIC_TYPE:
        return _describe_dynamic(kind, resource.inputs)
    if resource.type == _K8S_PROVIDER:
        return "Kubernetes provider"
    return resource.type if resource.custom else f"component {resource.type}"


def _replacing(
    before: RenderedResource, after: RenderedResource, new_inputs: dict[str, Any], provider: dict[str, Any]
) -> tuple[bool, Callable[[tuple[_Element, ...], Any], str | None]]:
    """(has changes, which replacement reason a changed path gives) by the resource's provider."""
    if after.type.startswith("kubernetes:") and "kind" in after.inputs:
        fields = force_new_fields(after.inputs, provider, patch=after.type.endswith("Patch"))
        return True, lambda path, value: _touches(path, value, fields)
    keys: set[str] = set()
    if after.type == DYNAMIC_TYPE and (kind := dynamic_kind(after.inputs)) in _DYNAMIC_PROVIDERS:
        result = _DYNAMIC_PROVIDERS[kind]().diff("", before.inputs, new_inputs)
        if result.changes is False:
            return False, lambda *_: None  # the provider's own verdict, as the engine takes it
        keys = set(result.replaces or ())
    elif after.type == _K8S_PROVIDER:
        keys = set(_provider_replaces(before.inputs, new_inputs))
    return True, lambda path, _: str(path[0]) if path[0] in keys else None


def _compare(
    urn: str, before: RenderedResource, after: RenderedResource, provider: dict[str, Any]
) -> ResourceChange | None:
    new_inputs = _ignoring(before, after)
    if not after.custom or new_inputs == before.inputs:
        return None
    changed, reason = _replacing(before, after, new_inputs, provider)
    if not changed:
        return None
    reasons: set[str] = set()

    def replaces(path: tuple[_Element, ...], value: Any) -> bool:
        found = reason(path, value)
        if found:
            reasons.add(found)
        return found is not None

    changes = _property_changes(before.inputs, new_inputs, replaces)
    return ResourceChange(
        action="replace" if reasons else "update",
        urn=urn,
        type=after.type,
        name=after.name,
        parent=after.parent,
        kind=_kind(after),
        describes=_describe(after, before),
        replaced_by=tuple(sorted(reasons)),
        changes=changes,
    )


def _one_sided(action: Action, urn: str, resource: RenderedResource) -> ResourceChange:
    return ResourceChange(
        action, urn, resource.type, resource.name, resource.parent, _kind(resource), _describe(resource)
    )


def _with_provider_replaced(changes: list[ResourceChange], both: dict[str, RenderedResource]) -> None:
    """A replaced Kubernetes provider replaces every object it manages (the engine's `provider` key)."""
    if not any(c.type == _K8S_PROVIDER and c.action == "replace" for c in changes):
        return
    seen = {c.urn: i for i, c in enumerate(changes)}
    for urn, resource in both.items():
        if not resource.type.startswith("kubernetes:"):
            continue
        if urn in seen:
            old = changes[seen[urn]]
            changes[seen[urn]] = replace(old, action="replace", replaced_by=(*old.replaced_by, "provider"))
        else:
            changes.append(replace(_one_sided("replace", urn, resource), replaced_by=("provider",)))


def diff_renders(before: RenderResult, after: RenderResult, *, against: str = "") -> PlanDiff:
    """Classify every resource of two renders of one stack as the engine would plan it."""
    old, new = _urns(before), _urns(after)
    provider = _kubernetes_provider(after)
    changes: list[ResourceChange] = []
    for urn in sorted(old.keys() | new.keys()):
        if urn not in old:
            changes.append(_one_sided("create", urn, new[urn]))
        elif urn not in new:
            changes.append(_one_sided("delete", urn, old[urn]))
        elif change := _compare(urn, old[urn], new[urn], provider):
            changes.append(change)
    _with_provider_replaced(changes, {u: new[u] for u in old.keys() & new.keys()})
    changes.sort(key=lambda c: (ACTIONS.index(c.action), c.urn))
    outputs = _property_changes(before.outputs, after.outputs, lambda *_: False)
    release = _release(before, after)
    resources = tuple(changes)
    return PlanDiff(
        stack=after.stack,
        release=release,
        summary=_summary(release, resources, outputs, new),
        resources=resources,
        outputs=outputs,
        against=against,
    )


# ---------------------------------------------------------------------------------------------
# The release, in one line


def _training_inputs(render: RenderResult, release_id: str | None) -> tuple[str | None, str | None]:
    """(dataset URI, dataset sha256) from the release's training spec ConfigMap, if it has one."""
    for resource in render.resources:
        data, meta = resource.inputs.get("data"), resource.inputs.get("metadata") or {}
        if resource.inputs.get("kind") != _CONFIG_MAP or not isinstance(data, dict):
            continue
        if (meta.get("labels") or {}).get(RELEASE_LABEL) != release_id or _SPEC_KEY not in data:
            continue
        try:
            spec = yaml.safe_load(str(data[_SPEC_KEY])) or {}
            expected = json.loads(str(data.get(_EXPECTED_KEY) or "{}"))
        except (yaml.YAMLError, ValueError):
            return None, None
        return spec.get("dataset"), expected.get("dataset_hash")
    return None, None


def _release(before: RenderResult, after: RenderResult) -> ReleaseChange:
    def output(render: RenderResult, key: str) -> str | None:
        value = render.outputs.get(key)
        return None if value is None else str(value)

    after_id = output(after, "release_id")
    dataset, dataset_hash = _training_inputs(after, after_id)
    trains = any(_kind(r) == RELEASE_RECORD_KIND for r in after.resources)
    return ReleaseChange(
        before=output(before, "release_id"),
        after=after_id,
        model_version_before=output(before, "model_version"),
        model_version_after=output(after, "model_version"),
        trains=trains,
        dataset=dataset,
        dataset_sha256=dataset_hash,
    )


def _moves_release(change: ResourceChange) -> bool:
    """Part of rolling out a release: its Job, record, alias, or an object relabelled with it."""
    if change.kind in ("Job", RELEASE_RECORD_KIND, MODEL_ALIAS_KIND):
        return True
    return any(c.path.endswith(f'["{RELEASE_LABEL}"]') for c in change.changes)


def _release_phrases(changes: tuple[ResourceChange, ...], after: dict[str, RenderedResource]) -> list[str]:
    phrases = [f"training Job {c.action}d" for c in changes if c.kind == "Job" and c.action != "delete"]
    rolled = any(
        p.path.startswith("spec.template") and RELEASE_LABEL in p.path for c in changes for p in c.changes
    )
    if rolled:
        phrases.append("serving rolled to it")
    for change in changes:
        if change.kind == MODEL_ALIAS_KIND and change.urn in after:
            phrases.append(f"{after[change.urn].inputs.get('alias')} moves after rollout")
    return list(dict.fromkeys(phrases))


def _listing(changes: list[ResourceChange]) -> str:
    named = [f"{c.action} {c.name}" for c in changes[:4]]
    return ", ".join(named) + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def _summary(
    release: ReleaseChange,
    changes: tuple[ResourceChange, ...],
    outputs: tuple[PropertyChange, ...],
    after: dict[str, RenderedResource],
) -> str:
    if not changes:
        return "no changes" if not outputs else "only stack outputs change"
    if not release.changed:
        return f"release {release.after} unchanged: {_listing(list(changes))}"
    made_of = f" (dataset {release.dataset}" if release.dataset else ""
    if made_of:
        made_of += f" sha256 {release.dataset_sha256[:12]})" if release.dataset_sha256 else ")"
    phrases = _release_phrases(changes, after) or ["no resource moves with it"]
    others = [c for c in changes if not _moves_release(c)]
    line = f"new release {release.after}{made_of}: {', '.join(phrases)}"
    return line + (f"; also {_listing(others)}" if others else "")
