"""The platform's policy rules as plain functions, runnable on a render without the Pulumi engine.

A resource is `{"type": <Pulumi type token>, "name": <logical name>, "props": <inputs>}`; for
Kubernetes resources `props` is the camelCase object (apiVersion/kind/metadata/spec) the engine
passes to policies. Rules read props through `Mapping`/`Sequence` only, so they run unchanged on
plain dicts and on pulumi_policy's unknown-checking proxies (an unknown value read during preview
raises `UnknownValueError`, which the policy SDK reports as "can't run during preview").

`check_resources(resources, config)` runs every rule; `policy/__main__.py` wraps the same rules in
a `PolicyPack`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RESOURCE_RULES",
    "SERVICE_TYPES",
    "STACK_RULES",
    "PolicyConfig",
    "ResourceRule",
    "StackRule",
    "Violation",
    "check_resources",
    "flatten_pack_config",
    "stack_pack_config",
]

STACK_LABEL = "mlops.dev/stack"
COMPONENT_LABEL = "app.kubernetes.io/component"
GATES_ANNOTATION = "mlops.dev/gates"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
EXPOSING_SERVICE_TYPES = ("NodePort", "LoadBalancer")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "SECRETS", "TOKEN", "KEY", "APIKEY", "CREDENTIAL"}
    | {"CREDENTIALS", "CREDS", "DSN", "PRIVATE"}
)
_SECRET_PHRASES = ("DATABASE_URL", "DB_URL", "CONNECTION_STRING", "CONN_STR", "ACCESS_KEY", "API_KEY")
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@dataclass(frozen=True)
class Violation:
    rule: str
    """Name of the rule (the policy's kebab-case name)."""
    resource: str
    """Logical name of the offending resource."""
    message: str
    """Names the rule and the resource, says what is wrong, why it matters and how to fix it."""


@dataclass(frozen=True)
class PolicyConfig:
    """The pack's configuration, validated. Keys match the policies' config schema."""

    allowed_service_types: frozenset[str] = frozenset()
    """Service types allowed besides ClusterIP/headless (e.g. "LoadBalancer")."""
    digest_required_stacks: frozenset[str] = frozenset({"prod"})
    """Stacks (label `mlops.dev/stack`) whose images must be pinned by digest and releases gated."""

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> PolicyConfig:
        config = config or {}
        unknown = set(config) - {"allowed_service_types", "digest_required_stacks", "enforcementLevel"}
        if unknown:
            raise ValueError(
                f"unknown policy config keys {sorted(unknown)}; allowed: "
                "allowed_service_types, digest_required_stacks"
            )
        allowed = _string_list(config, "allowed_service_types", [])
        bad = sorted(set(allowed) - set(SERVICE_TYPES))
        if bad:
            raise ValueError(f"allowed_service_types has {bad}; allowed values: {list(SERVICE_TYPES)}")
        stacks = _string_list(config, "digest_required_stacks", ["prod"])
        return cls(frozenset(allowed), frozenset(stacks))


def flatten_pack_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A `--policy-pack-config` file (per policy) as the one mapping `check_resources` takes.

    Enforcement levels are dropped; a key set to different values for two policies is an error.
    """
    flat: dict[str, Any] = {}
    for policy, settings in raw.items():
        if not isinstance(settings, Mapping):
            continue  # an enforcement level, e.g. {"all": "mandatory"}
        for key, value in settings.items():
            if key == "enforcementLevel":
                continue
            if key in flat and flat[key] != value:
                raise ValueError(f"policy config {key} differs between policies (at {policy!r})")
            flat[key] = value
    PolicyConfig.from_mapping(flat)
    return flat


def stack_pack_config(stack: str) -> dict[str, Any]:
    """`policy/config/<stack>.json` flattened, or {} when the stack has none (the defaults).

    The same file goes to the engine: `--policy-pack-config policy/config/<stack>.json`.
    """
    path = Path(__file__).parent / "config" / f"{stack}.json"
    if not path.is_file():
        return {}
    try:
        return flatten_pack_config(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _string_list(config: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    value = config.get(key, default)
    if value is None:
        return default
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise ValueError(f"policy config {key} must be a list of strings, got {value!r}")
    return list(value)


# ---- reading Kubernetes objects (plain dicts or pulumi_policy proxies) ----


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = _map(obj).get(key)
    return obj


def _kind(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1]


_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


def _pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if not resource_type.startswith("kubernetes:"):
        return None
    kind = _kind(resource_type)
    if kind == "Pod":
        return _map(props.get("spec"))
    if kind == "CronJob":
        return _map(_get(props, "spec", "jobTemplate", "spec", "template", "spec"))
    if kind in _WORKLOADS:
        return _map(_get(props, "spec", "template", "spec"))
    return None


def _is_batch(resource_type: str) -> bool:
    return _kind(resource_type) in ("Job", "CronJob")


def _containers(pod: Mapping[str, Any], init: bool = True) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers") if init else ("containers",):
        for index, container in enumerate(_list(pod.get(field))):
            c = _map(container)
            label = f"{'init container' if field == 'initContainers' else 'container'}"
            yield f"{label} '{c.get('name') or index}'", c


def _labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(_get(props, "metadata", "labels"))


def _template_labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(_get(props, "spec", "template", "metadata", "labels"))


def _stack(props: Mapping[str, Any]) -> str | None:
    stack = _labels(props).get(STACK_LABEL) or _template_labels(props).get(STACK_LABEL)
    return str(stack) if stack else None


def _is_serving_deployment(resource_type: str, props: Mapping[str, Any]) -> bool:
    if resource_type != "kubernetes:apps/v1:Deployment":
        return False
    return "serving" in (_labels(props).get(COMPONENT_LABEL), _template_labels(props).get(COMPONENT_LABEL))


# ---- resource rules: (resource type, props, config) -> problems (what, why, fix) ----


def container_security_context(
    resource_type: str, props: Mapping[str, Any], config: PolicyConfig
) -> list[str]:
    pod = _pod_spec(resource_type, props)
    if pod is None:
        return []
    pod_sc = _map(pod.get("securityContext"))
    problems: list[str] = []
    for label, c in _containers(pod):
        sc = _map(c.get("securityContext"))
        missing: list[str] = []
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True:
            missing.append("runAsNonRoot: true (container or pod securityContext)")
        elif uid == 0:
            missing.append("a non-zero runAsUser (runAsUser is 0)")
        if sc.get("readOnlyRootFilesystem") is not True:
            missing.append("readOnlyRootFilesystem: true")
        if sc.get("allowPrivilegeEscalation") is not False:
            missing.append("allowPrivilegeEscalation: false")
        if sc.get("privileged") is True:
            missing.append("privileged: false")
        caps = _map(sc.get("capabilities"))
        if "ALL" not in [str(d) for d in _list(caps.get("drop"))]:
            missing.append("capabilities.drop: [ALL]")
        added = [str(a) for a in _list(caps.get("add")) if str(a) != "NET_BIND_SERVICE"]
        if added:
            missing.append(f"no added capabilities besides NET_BIND_SERVICE (adds {added})")
        seccomp = _map(sc.get("seccompProfile") or pod_sc.get("seccompProfile")).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            missing.append(f"seccompProfile.type: RuntimeDefault (is {seccomp or 'unset'})")
        if missing:
            problems.append(
                f"{label} needs {', '.join(missing)}; without them a compromised process can run as "
                "root, write to its image or gain privileges (Pod Security Standard 'restricted')"
            )
    host = _host_access(pod)
    if host:
        problems.append(
            f"uses the node's {', '.join(host)}; a pod that shares the host's namespaces, files or "
            "ports can read other pods' traffic and processes or escape to the node (Pod Security "
            "Standard 'baseline'): drop them (a scraper reaches pods over the pod network)"
        )
    return problems


def _host_access(pod: Mapping[str, Any]) -> list[str]:
    """What a pod takes from its node: host namespaces, hostPath volumes, host ports."""
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field) is True]
    found += [
        f"hostPath volume '{_map(v).get('name')}'"
        for v in _list(pod.get("volumes"))
        if _map(v).get("hostPath")
    ]
    for label, c in _containers(pod):
        found += [
            f"hostPort {_map(port).get('hostPort')} ({label})"
            for port in _list(c.get("ports"))
            if _map(port).get("hostPort") not in (None, 0)
        ]
    return found


def container_resources_and_probes(
    resource_type: str, props: Mapping[str, Any], config: PolicyConfig
) -> list[str]:
    pod = _pod_spec(resource_type, props)
    if pod is None:
        return []
    problems: list[str] = []
    for label, c in _containers(pod):
        resources = _map(c.get("resources"))
        missing = [
            f"{section}.{res}"
            for section in ("requests", "limits")
            for res in ("cpu", "memory")
            if _map(resources.get(section)).get(res) in (None, "")
        ]
        if missing:
            problems.append(
                f"{label} has no resources {', '.join(missing)}; without requests the scheduler "
                "overcommits nodes and without limits one pod can starve its neighbours"
            )
    # Jobs run to completion: readiness/liveness probes do not apply (and init containers
    # cannot have them), so only long-running pods' app containers need probes.
    if not _is_batch(resource_type):
        for label, c in _containers(pod, init=False):
            absent = [p for p in ("readinessProbe", "livenessProbe") if not _map(c.get(p))]
            if absent:
                problems.append(
                    f"{label} has no {' or '.join(absent)}; without them Kubernetes sends traffic to "
                    "pods that are not ready and never restarts hung ones"
                )
    return problems


def _image_problem(image: Any, stack: str | None, config: PolicyConfig) -> str | None:
    if not isinstance(image, str) or not image:
        return "has no image"
    if _DIGEST.search(image):
        return None
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is None:
        return f"image '{image}' has no tag (it means :latest, which moves under a running release)"
    if tag == "latest":
        return f"image '{image}' uses :latest, which moves: the same spec can run different code"
    if stack is not None and stack in config.digest_required_stacks:
        return (
            f"image '{image}' is not pinned by digest (@sha256:...), required in stack '{stack}' "
            "so the release that passed its gates is exactly the one that runs"
        )
    return None


def image_pinned(resource_type: str, props: Mapping[str, Any], config: PolicyConfig) -> list[str]:
    pod = _pod_spec(resource_type, props)
    if pod is None:
        return []
    stack = _stack(props)
    problems = []
    for label, c in _containers(pod):
        problem = _image_problem(c.get("image"), stack, config)
        if problem:
            problems.append(f"{label} {problem}")
    return problems


def service_type_allowed(resource_type: str, props: Mapping[str, Any], config: PolicyConfig) -> list[str]:
    if resource_type != "kubernetes:core/v1:Service":
        return []
    service_type = _get(props, "spec", "type") or "ClusterIP"
    if service_type in EXPOSING_SERVICE_TYPES and service_type not in config.allowed_service_types:
        return [
            f"is of type {service_type}, which exposes it outside the cluster; use ClusterIP behind an "
            f"ingress, or list {service_type} in the policy config allowed_service_types"
        ]
    return []


def _looks_secret(name: str) -> bool:
    upper = name.upper()
    words = set(re.split(r"[^A-Z0-9]+", upper))
    return bool(words & _SECRET_WORDS) or any(phrase in upper for phrase in _SECRET_PHRASES)


def no_plaintext_secret_env(resource_type: str, props: Mapping[str, Any], config: PolicyConfig) -> list[str]:
    pod = _pod_spec(resource_type, props)
    if pod is None:
        return []
    problems = []
    for label, c in _containers(pod):
        for env in _list(c.get("env")):
            e = _map(env)
            name = str(e.get("name") or "")
            value = e.get("value")
            from_secret = _map(_get(e, "valueFrom", "secretKeyRef"))
            if _looks_secret(name) and not from_secret:
                source = "a plain value" if value not in (None, "") else "not a secretKeyRef"
                problems.append(
                    f"{label} env {name} looks like a secret but is {source}; plain env values are "
                    "stored readable in the pod spec and Pulumi state: use valueFrom.secretKeyRef"
                )
            elif isinstance(value, str) and _URL_WITH_PASSWORD.search(value):
                problems.append(
                    f"{label} env {name} holds a URL with an embedded password; move it into a "
                    "Secret and use valueFrom.secretKeyRef"
                )
    return problems


def release_gates_passed(resource_type: str, props: Mapping[str, Any], config: PolicyConfig) -> list[str]:
    if not _is_serving_deployment(resource_type, props):
        return []
    stack = _stack(props)
    if stack is None or stack not in config.digest_required_stacks:
        return []
    annotations = (
        _map(_get(props, "metadata", "annotations")),
        _map(_get(props, "spec", "template", "metadata", "annotations")),
    )
    if any(a.get(GATES_ANNOTATION) == "passed" for a in annotations):
        return []
    found = next((a.get(GATES_ANNOTATION) for a in annotations if a.get(GATES_ANNOTATION)), None)
    seen = f" (found {found!r})" if found else ""
    return [
        f"serves a release without annotation {GATES_ANNOTATION}: passed{seen} in stack '{stack}'; "
        "only a release that passed its quality gates may serve there: pin one with `mlops promote`"
    ]


def artifact_bucket_protected(
    resource_type: str, props: Mapping[str, Any], config: PolicyConfig
) -> list[str]:
    if ":dynamic:" not in resource_type or props.get("mlops_kind") != "s3-bucket":
        return []
    problems = []
    if props.get("versioning") is not True:
        problems.append(
            f"has versioning {props.get('versioning')!r}; without versioning an overwritten or "
            "deleted model artifact cannot be recovered"
        )
    if props.get("block_public_access") is not True:
        problems.append(
            f"has block_public_access {props.get('block_public_access')!r}; model artifacts and "
            "training data must not be readable by anyone on the internet"
        )
    return problems


# ---- stack rules: all resources at once ----


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Kubernetes LabelSelector semantics (an empty selector selects everything)."""
    for key, value in _map(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in _list(selector.get("matchExpressions")):
        e = _map(expr)
        label, op, values = str(e.get("key")), e.get("operator"), [str(v) for v in _list(e.get("values"))]
        present = label in labels
        if (
            (op == "In" and not (present and str(labels[label]) in values))
            or (op == "NotIn" and present and str(labels[label]) in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _max_unavailable_zero(props: Mapping[str, Any]) -> bool:
    strategy = _map(_get(props, "spec", "strategy"))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    value = _map(strategy.get("rollingUpdate")).get("maxUnavailable")  # default 25%
    return value in (0, "0", "0%")


def serving_rollout_safe(
    resources: Sequence[Mapping[str, Any]], config: PolicyConfig
) -> list[tuple[str, str]]:
    pdbs = [
        r
        for r in resources
        if r.get("type")
        in ("kubernetes:policy/v1:PodDisruptionBudget", "kubernetes:policy/v1beta1:PodDisruptionBudget")
    ]
    problems: list[tuple[str, str]] = []
    for r in resources:
        props = _map(r.get("props"))
        if not _is_serving_deployment(str(r.get("type")), props):
            continue
        name = str(r.get("name"))
        namespace = _get(props, "metadata", "namespace") or ""
        pod_labels = _template_labels(props)
        covered = any(
            (_get(p.get("props"), "metadata", "namespace") or "") == namespace
            and isinstance(_get(p.get("props"), "spec", "selector"), Mapping)
            and _selects(_map(_get(p.get("props"), "spec", "selector")), pod_labels)
            for p in pdbs
        )
        if not covered:
            problems.append(
                (
                    name,
                    f"has no PodDisruptionBudget selecting its pods (labels {dict(pod_labels)}); a node "
                    "drain could take every replica down at once",
                )
            )
        if not _max_unavailable_zero(props):
            problems.append(
                (
                    name,
                    "does not roll out with strategy.rollingUpdate.maxUnavailable: 0; a new release "
                    "must never reduce serving capacity (the default is 25%)",
                )
            )
    return problems


@dataclass(frozen=True)
class ResourceRule:
    name: str
    description: str
    check: Callable[[str, Mapping[str, Any], PolicyConfig], list[str]]
    config_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    check: Callable[[Sequence[Mapping[str, Any]], PolicyConfig], list[tuple[str, str]]]
    config_keys: tuple[str, ...] = ()


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule(
        "container-security-context",
        "Containers run as non-root with a read-only root filesystem, no privilege escalation, "
        "all capabilities dropped and the RuntimeDefault seccomp profile, in pods without host "
        "namespaces, hostPath volumes or host ports.",
        container_security_context,
    ),
    ResourceRule(
        "container-resources-and-probes",
        "Every container sets CPU and memory requests and limits, and long-running containers "
        "have readiness and liveness probes.",
        container_resources_and_probes,
    ),
    ResourceRule(
        "image-pinned",
        "Images are never untagged or :latest, and are pinned by digest in digest-required stacks.",
        image_pinned,
        ("digest_required_stacks",),
    ),
    ResourceRule(
        "service-type-allowed",
        "Services are not of type LoadBalancer or NodePort unless the policy config allows it.",
        service_type_allowed,
        ("allowed_service_types",),
    ),
    ResourceRule(
        "no-plaintext-secret-env",
        "Environment variables that look like secrets come from valueFrom.secretKeyRef, never a plain value.",
        no_plaintext_secret_env,
    ),
    ResourceRule(
        "release-gates-passed",
        "Serving Deployments in digest-required stacks carry the annotation mlops.dev/gates: passed.",
        release_gates_passed,
        ("digest_required_stacks",),
    ),
    ResourceRule(
        "artifact-bucket-protected",
        "The artifact bucket has versioning on and public access blocked.",
        artifact_bucket_protected,
    ),
)

STACK_RULES: tuple[StackRule, ...] = (
    StackRule(
        "serving-rollout-safe",
        "Serving Deployments have a PodDisruptionBudget selecting them and roll out with maxUnavailable 0.",
        serving_rollout_safe,
    ),
)


def describe(resource_type: str) -> str:
    return "artifact bucket" if ":dynamic:" in resource_type else _kind(resource_type) or "resource"


def violation(rule: str, resource_type: str, name: str, problem: str) -> Violation:
    return Violation(rule, name, f"[{rule}] {describe(resource_type)} '{name}': {problem}")


def check_resources(resources: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[Violation]:
    """Run every rule over a whole render; `config` holds allowed_service_types / digest_required_stacks."""
    cfg = PolicyConfig.from_mapping(config)
    found: list[Violation] = []
    for resource in resources:
        rtype, name, props = str(resource["type"]), str(resource["name"]), _map(resource.get("props"))
        for rule in RESOURCE_RULES:
            found.extend(violation(rule.name, rtype, name, p) for p in rule.check(rtype, props, cfg))
    types = {str(r["name"]): str(r["type"]) for r in resources}
    for stack_rule in STACK_RULES:
        for name, problem in stack_rule.check(resources, cfg):
            found.append(violation(stack_rule.name, types.get(name, ""), name, problem))
    return found
