"""The platform's policy rules as plain functions, runnable on a render without the Pulumi engine.

A rule sees a `Resource`: the Pulumi type token, the logical name, `props` (for Kubernetes objects
the camelCase object, apiVersion/kind/metadata/spec, the engine passes to policies), the stack it
belongs to and its `protect` option. Rules read props through `Mapping`/`Sequence` only, so they
run unchanged on plain dicts and on pulumi_policy's unknown-checking proxies (an unknown value
read during preview raises `UnknownValueError`, which the policy SDK reports as "can't run during
preview").

`check_resources(resources, config)` runs every rule; `policy/__main__.py` wraps the same rules in
a `PolicyPack`. docs/policy.md lists the rules; tests/policy/test_mutations.py proves each one on
every object of the dev and prod renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RECOMMENDED_LABELS",
    "RESOURCE_RULES",
    "SERVICE_TYPES",
    "STACK_RULES",
    "PolicyConfig",
    "Resource",
    "ResourceRule",
    "StackRule",
    "Violation",
    "check_resources",
    "flatten_pack_config",
    "stack_of_urn",
    "stack_pack_config",
    "violation",
]

STACK_LABEL = "mlops.dev/stack"
COMPONENT_LABEL = "app.kubernetes.io/component"
GATES_ANNOTATION = "mlops.dev/gates"
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    STACK_LABEL,
)
"""Labels every Kubernetes object (and pod template) carries: components/common.py `labels()`."""
DRAIN_ENV = "MLOPS_DRAIN_SECONDS"
"""The model server's bound on its drain after SIGTERM (model/server/__main__.py)."""
SPREAD_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
EXPOSING_SERVICE_TYPES = ("NodePort", "LoadBalancer")
BUCKET_KIND = "s3-bucket"
"""`mlops_kind` of the artifact bucket (components/providers/s3_bucket.py)."""
SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
    | {"CustomResourceDefinition", "PriorityClass", "RuntimeClass", "IngressClass", "CSIDriver"}
    | {"CSINode", "VolumeAttachment", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
    | {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "APIService", "FlowSchema"}
    | {"PriorityLevelConfiguration", "CertificateSigningRequest"}
)
_CONFIG_KEYS = ("allowed_service_types", "digest_required_stacks", "min_run_as_user")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "SECRETS", "TOKEN", "KEY", "APIKEY", "CREDENTIAL"}
    | {"CREDENTIALS", "CREDS", "DSN", "PRIVATE"}
)
_SECRET_PHRASES = ("DATABASE_URL", "DB_URL", "CONNECTION_STRING", "CONN_STR", "ACCESS_KEY", "API_KEY")
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_SHELL_SLEEP = re.compile(r"^\s*(?:exec\s+)?sleep\s+(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Resource:
    """One declared resource as a rule sees it."""

    type: str
    """Pulumi type token, e.g. kubernetes:apps/v1:Deployment."""
    name: str
    """Logical (Pulumi) name."""
    props: Mapping[str, Any]
    """Inputs; for Kubernetes objects the camelCase object."""
    stack: str | None = None
    """The Pulumi stack (from the URN, or the render); None: unknown, then the object's stack label."""
    protect: bool | None = None
    """The `protect` resource option; None: unknown (e.g. a manifest read back from disk)."""
    urn: str | None = None

    @classmethod
    def from_mapping(cls, resource: Mapping[str, Any]) -> Resource:
        """From `{type, name, props[, stack, protect, urn]}` (what renders and tests pass)."""
        protect = resource.get("protect")
        return cls(
            type=str(resource["type"]),
            name=str(resource["name"]),
            props=_map(resource.get("props")),
            stack=str(resource["stack"]) if resource.get("stack") else None,
            protect=bool(protect) if protect is not None else None,
            urn=str(resource["urn"]) if resource.get("urn") else None,
        )


@dataclass(frozen=True)
class Violation:
    rule: str
    """Name of the rule (the policy's kebab-case name)."""
    resource: str
    """Logical name of the offending resource."""
    message: str
    """Names the rule and the resource, says what is wrong, why it matters and how to fix it."""
    resource_type: str = ""
    """Type token of the offending resource (logical names repeat across types)."""


@dataclass(frozen=True)
class PolicyConfig:
    """The pack's configuration, validated. Keys match the policies' config schema."""

    allowed_service_types: frozenset[str] = frozenset()
    """Service types allowed besides ClusterIP/headless (e.g. "LoadBalancer")."""
    digest_required_stacks: frozenset[str] = frozenset({"prod"})
    """Production stacks: images by digest, gated releases, topology spread, protected state."""
    min_run_as_user: int = 10000
    """Lowest UID a container may run as (UIDs below it collide with node users and images' own)."""

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> PolicyConfig:
        config = config or {}
        unknown = set(config) - {*_CONFIG_KEYS, "enforcementLevel"}
        if unknown:
            raise ValueError(
                f"unknown policy config keys {sorted(unknown)}; allowed: {', '.join(_CONFIG_KEYS)}"
            )
        allowed = _string_list(config, "allowed_service_types", [])
        bad = sorted(set(allowed) - set(SERVICE_TYPES))
        if bad:
            raise ValueError(f"allowed_service_types has {bad}; allowed values: {list(SERVICE_TYPES)}")
        stacks = _string_list(config, "digest_required_stacks", ["prod"])
        min_uid = config.get("min_run_as_user", cls.min_run_as_user)
        if isinstance(min_uid, float) and min_uid.is_integer():
            min_uid = int(min_uid)  # the engine passes JSON numbers as floats
        if isinstance(min_uid, bool) or not isinstance(min_uid, int) or min_uid < 1:
            raise ValueError(f"policy config min_run_as_user must be an integer >= 1, got {min_uid!r}")
        return cls(frozenset(allowed), frozenset(stacks), min_uid)


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


def stack_of_urn(urn: str | None) -> str | None:
    """The stack in `urn:pulumi:<stack>::<project>::<type>::<name>`."""
    if not urn or not urn.startswith("urn:pulumi:"):
        return None
    return urn.split("::", 1)[0][len("urn:pulumi:") :] or None


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


def _plain(value: Any) -> Any:
    """A proxy tree as plain dicts and lists (for comparing and printing)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _number(value: Any) -> float | None:
    """A number from props (the engine passes JSON numbers as floats), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _kind(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1]


def _is_object(r: Resource) -> bool:
    """A Kubernetes API object: not the provider, a Helm release or a ConfigGroup component."""
    return r.type.startswith("kubernetes:") and "kind" in r.props


def _is_kind(r: Resource, *kinds: str) -> bool:
    return _is_object(r) and _kind(r.type) in kinds


_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


def _pod_spec(r: Resource) -> Mapping[str, Any] | None:
    if not _is_kind(r, *_WORKLOADS):
        return None
    kind = _kind(r.type)
    if kind == "Pod":
        return _map(r.props.get("spec"))
    if kind == "CronJob":
        return _map(_get(r.props, "spec", "jobTemplate", "spec", "template", "spec"))
    return _map(_get(r.props, "spec", "template", "spec"))


def _pod_labels(r: Resource) -> Mapping[str, Any]:
    """The labels of the pods a workload creates."""
    kind = _kind(r.type)
    if kind == "Pod":
        return _labels(r.props)
    if kind == "CronJob":
        return _map(_get(r.props, "spec", "jobTemplate", "spec", "template", "metadata", "labels"))
    return _map(_get(r.props, "spec", "template", "metadata", "labels"))


def _is_batch(r: Resource) -> bool:
    """Runs to completion: probes do not apply."""
    kind = _kind(r.type)
    if kind == "Pod":
        return _get(r.props, "spec", "restartPolicy") in ("Never", "OnFailure")
    return kind in ("Job", "CronJob")


def _containers(pod: Mapping[str, Any], init: bool = True) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers") if init else ("containers",):
        for index, container in enumerate(_list(pod.get(field))):
            c = _map(container)
            label = f"{'init container' if field == 'initContainers' else 'container'}"
            yield f"{label} '{c.get('name') or index}'", c


def _env_value(container: Mapping[str, Any], name: str) -> Any:
    entries = (_map(e) for e in _list(container.get("env")))
    return next((e.get("value") for e in entries if e.get("name") == name), None)


def _labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(_get(props, "metadata", "labels"))


def _namespace(r: Resource) -> str:
    return str(_get(r.props, "metadata", "namespace") or "")


def _stack(r: Resource) -> str | None:
    if r.stack:
        return r.stack
    stack = _labels(r.props).get(STACK_LABEL) or _pod_labels(r).get(STACK_LABEL)
    return str(stack) if stack else None


def _production(r: Resource, config: PolicyConfig) -> str | None:
    """The resource's stack when it is a production stack (digest_required_stacks), else None."""
    stack = _stack(r)
    return stack if stack is not None and stack in config.digest_required_stacks else None


def _is_serving_deployment(r: Resource) -> bool:
    if not _is_kind(r, "Deployment"):
        return False
    return "serving" in (_labels(r.props).get(COMPONENT_LABEL), _pod_labels(r).get(COMPONENT_LABEL))


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


def _is_empty_selector(selector: Mapping[str, Any]) -> bool:
    return not _map(selector.get("matchLabels")) and not _list(selector.get("matchExpressions"))


# ---- resource rules: (resource, config) -> problems (what, why, fix) ----


def container_security_context(r: Resource, config: PolicyConfig) -> list[str]:
    pod = _pod_spec(r)
    if pod is None:
        return []
    pod_sc = _map(pod.get("securityContext"))
    problems: list[str] = []
    for label, c in _containers(pod):
        sc = _map(c.get("securityContext"))
        missing: list[str] = []
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = _number(sc.get("runAsUser", pod_sc.get("runAsUser")))
        if non_root is not True:
            missing.append("runAsNonRoot: true (container or pod securityContext)")
        if uid is None:
            missing.append(f"runAsUser >= {config.min_run_as_user} (unset: the image's USER decides)")
        elif uid < config.min_run_as_user:
            missing.append(
                f"runAsUser >= {config.min_run_as_user} (is {_fmt(uid)}; a low UID is root or "
                "shares its files with a user of the node or of another image)"
            )
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
            missing.append(f"seccompProfile.type: RuntimeDefault or Localhost (is {seccomp or 'unset'})")
        if missing:
            problems.append(
                f"{label} needs {', '.join(missing)}; without them a compromised process can run as "
                "root, write to its image, gain privileges or make any system call (Pod Security "
                "Standard 'restricted')"
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


_PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


def _probe_handler(probe: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(probe[k]) for k in _PROBE_HANDLERS if k in probe}


def container_resources_and_probes(r: Resource, config: PolicyConfig) -> list[str]:
    pod = _pod_spec(r)
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
    if _is_batch(r):
        return problems
    for label, c in _containers(pod, init=False):
        ready, live = _map(c.get("readinessProbe")), _map(c.get("livenessProbe"))
        absent = [name for name, probe in (("readinessProbe", ready), ("livenessProbe", live)) if not probe]
        if absent:
            problems.append(
                f"{label} has no {' or '.join(absent)}; without them Kubernetes sends traffic to "
                "pods that are not ready and never restarts hung ones"
            )
        elif _probe_handler(ready) == _probe_handler(live):
            problems.append(
                f"{label}'s livenessProbe is the same check as its readinessProbe "
                f"({json.dumps(_probe_handler(live), sort_keys=True)}); when a dependency fails, every "
                "replica is restarted at once instead of only leaving the Service: make liveness check "
                "only that the process answers"
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


def image_pinned(r: Resource, config: PolicyConfig) -> list[str]:
    pod = _pod_spec(r)
    if pod is None:
        return []
    stack = _stack(r)
    problems = []
    for label, c in _containers(pod):
        problem = _image_problem(c.get("image"), stack, config)
        if problem:
            problems.append(f"{label} {problem}")
    return problems


def service_type_allowed(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_kind(r, "Service"):
        return []
    service_type = _get(r.props, "spec", "type") or "ClusterIP"
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


def no_plaintext_secret_env(r: Resource, config: PolicyConfig) -> list[str]:
    pod = _pod_spec(r)
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


def release_gates_passed(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_serving_deployment(r):
        return []
    stack = _production(r, config)
    if stack is None:
        return []
    annotations = (
        _map(_get(r.props, "metadata", "annotations")),
        _map(_get(r.props, "spec", "template", "metadata", "annotations")),
    )
    if any(a.get(GATES_ANNOTATION) == "passed" for a in annotations):
        return []
    found = next((a.get(GATES_ANNOTATION) for a in annotations if a.get(GATES_ANNOTATION)), None)
    seen = f" (found {found!r})" if found else ""
    return [
        f"serves a release without annotation {GATES_ANNOTATION}: passed{seen} in stack '{stack}'; "
        "only a release that passed its quality gates may serve there: pin one with `mlops promote`"
    ]


def _is_bucket(r: Resource) -> bool:
    return ":dynamic:" in r.type and r.props.get("mlops_kind") == BUCKET_KIND


def artifact_bucket_protected(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_bucket(r):
        return []
    props = r.props
    problems = [
        f"has {key} {props.get(key)!r} (needs true); without it {why}"
        for key, why in (
            ("versioning", "an overwritten or deleted model artifact cannot be recovered"),
            ("block_public_access", "model artifacts and training data could be made readable by anyone"),
        )
        if props.get(key) is not True
    ]
    if props.get("encryption") not in SSE_ALGORITHMS:
        problems.append(
            f"has encryption {props.get('encryption')!r} (needs one of {list(SSE_ALGORITHMS)}); "
            "without default server-side encryption artifacts rest unencrypted on the store's disks"
        )
    if props.get("tls_only") is not True:
        endpoint = props.get("endpoint_url")
        stack = _production(r, config)
        if not (isinstance(endpoint, str) and endpoint.lower().startswith("http://")):
            problems.append(
                f"has tls_only {props.get('tls_only')!r} (needs true); without the TLS-only bucket "
                "policy a client can read and write artifacts, and send its keys, over plain HTTP"
            )
        elif stack is not None:
            problems.append(
                f"is reached over plain HTTP ({endpoint}) in stack '{stack}', so artifacts and keys "
                "cross the network unencrypted: serve the S3 API over https:// and set tls_only"
            )
    return problems


def _pre_stop_seconds(pre_stop: Mapping[str, Any]) -> float | None:
    """How long a preStop hook holds the pod: `sleep: {seconds}`, `exec: [sleep, N]` or `sh -c 'sleep N'`."""
    if "sleep" in pre_stop:
        return _number(_get(pre_stop, "sleep", "seconds"))
    command = [str(part) for part in _list(_get(pre_stop, "exec", "command"))]
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return _number(command[1])
    if command:
        match = _SHELL_SLEEP.match(command[-1])
        return float(match.group(1)) if match else None
    return None


def _max_unavailable_zero(props: Mapping[str, Any]) -> bool:
    strategy = _map(_get(props, "spec", "strategy"))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    value = _map(strategy.get("rollingUpdate")).get("maxUnavailable")  # default 25%
    return value in (0, "0", "0%")


def serving_rollout_safe(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_serving_deployment(r):
        return []
    spec = _map(r.props.get("spec"))
    problems = []
    if not _max_unavailable_zero(r.props):
        problems.append(
            "does not roll out with strategy.rollingUpdate.maxUnavailable: 0; a new release must never "
            "reduce serving capacity (the default is 25%)"
        )
    min_ready = _number(spec.get("minReadySeconds"))
    progress = _number(spec.get("progressDeadlineSeconds"))
    history = _number(spec.get("revisionHistoryLimit"))
    if min_ready is None or min_ready <= 0:
        problems.append(
            "sets no minReadySeconds > 0; a new pod that crashes right after turning ready would "
            "count as available and the rollout would go on replacing good pods"
        )
    if progress is None or progress <= (min_ready or 0):
        problems.append(
            "sets no progressDeadlineSeconds above minReadySeconds; a rollout that stops making "
            "progress must be reported failed within a known bound (and fail `pulumi up`)"
        )
    if history is None or history < 1:
        problems.append(
            "sets no revisionHistoryLimit >= 1; the old ReplicaSets it keeps are what "
            "`kubectl rollout undo` goes back to (0 keeps none, unset keeps 10)"
        )
    pod = _pod_spec(r) or {}
    grace = _number(pod.get("terminationGracePeriodSeconds"))
    grace = 30.0 if grace is None else grace  # the Kubernetes default
    for label, c in _containers(pod, init=False):
        pre_stop = _map(_get(c, "lifecycle", "preStop"))
        delay = _pre_stop_seconds(pre_stop)
        drain = _number(_env_value(c, DRAIN_ENV))
        if not pre_stop or delay is None:
            problems.append(
                f"{label} has no preStop sleep (lifecycle.preStop `sleep: {{seconds: N}}` or "
                "`exec: [sleep, N]`); without it the server stops while Services and load balancers "
                "still send it requests, and those requests fail"
            )
        if drain is None:
            problems.append(
                f"{label} sets no env {DRAIN_ENV}, the server's drain bound after SIGTERM; the grace "
                "period can only be checked against an explicit bound"
            )
        if delay is not None and drain is not None and grace <= delay + drain:
            problems.append(
                f"has terminationGracePeriodSeconds {_fmt(grace)}, which does not cover {label}'s "
                f"preStop {_fmt(delay)}s plus its {_fmt(drain)}s drain: the kubelet kills the server "
                "with requests in flight"
            )
    return problems


def topology_spread(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_serving_deployment(r):
        return []
    stack = _production(r, config)
    if stack is None:
        return []
    own = _pod_labels(r)
    for constraint in _list(_get(r.props, "spec", "template", "spec", "topologySpreadConstraints")):
        c = _map(constraint)
        selector = c.get("labelSelector")
        if c.get("topologyKey") in SPREAD_KEYS and isinstance(selector, Mapping) and _selects(selector, own):
            return []
    return [
        f"has no topologySpreadConstraint over {' or '.join(SPREAD_KEYS)} whose labelSelector selects "
        f"its own pods, required in stack '{stack}'; without one the scheduler may put every replica "
        "on one node or zone, and one failure takes the model offline"
    ]


def no_bare_pods(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_kind(r, "Pod"):
        return []
    return [
        "is a bare Pod; nothing recreates it when its node fails or it is evicted: declare a "
        "Deployment for a server or a Job for work that runs to completion"
    ]


def no_default_namespace(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_object(r) or _kind(r.type) in CLUSTER_SCOPED_KINDS:
        return []
    namespace = _namespace(r)
    if not namespace:
        return [
            "has no metadata.namespace, so it lands wherever the provider or kubeconfig points, "
            "often `default`: set the stack's namespace explicitly"
        ]
    if namespace == "default":
        return [
            "is in the `default` namespace, which every user and tool writes to and this stack's "
            "NetworkPolicies, quotas and RBAC do not govern: use the stack's namespace"
        ]
    return []


def recommended_labels(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_object(r):
        return []
    places = [("", _labels(r.props))]
    if _pod_spec(r) is not None and _kind(r.type) != "Pod":
        places.append((" pod template", _pod_labels(r)))
    problems = []
    for where, labels in places:
        missing = [label for label in RECOMMENDED_LABELS if not labels.get(label)]
        if missing:
            problems.append(
                f"has no{where} labels {', '.join(missing)}; NetworkPolicies, dashboards, `kubectl` "
                "and this pack find an object's app, role, owner and stack by them "
                "(components/common.py labels())"
            )
    return problems


def _is_stateful(r: Resource) -> bool:
    return _is_kind(r, "PersistentVolumeClaim", "PersistentVolume") or _is_bucket(r)


def stateful_resources_protected(r: Resource, config: PolicyConfig) -> list[str]:
    if not _is_stateful(r) or r.protect is not False:
        return []  # not stateful, protected, or options unknown
    stack = _production(r, config)
    if stack is None:
        return []
    return [
        f"holds data but is not `protect`ed in stack '{stack}'; a `pulumi destroy`, a rename or a "
        "replacement would delete it: set the protect option (driven by the stack config)"
    ]


# ---- stack rules: all resources at once -> (offending resource, problem) ----


def _workloads(resources: Sequence[Resource]) -> list[Resource]:
    return [r for r in resources if _pod_spec(r) is not None]


def _selected_by(selector: Mapping[str, Any], namespace: str, workloads: Sequence[Resource]) -> bool:
    return any(_namespace(w) == namespace and _selects(selector, _pod_labels(w)) for w in workloads)


def _replicas(w: Resource, resources: Sequence[Resource]) -> float:
    """Replicas a workload runs at least: spec.replicas, or an autoscaler's minReplicas if higher."""
    replicas = _number(_get(w.props, "spec", "replicas"))
    least = 1.0 if replicas is None else replicas
    name = _get(w.props, "metadata", "name") or w.name
    for hpa in resources:
        target = _map(_get(hpa.props, "spec", "scaleTargetRef"))
        if (
            _is_kind(hpa, "HorizontalPodAutoscaler")
            and _namespace(hpa) == _namespace(w)
            and target.get("kind") == _kind(w.type)
            and target.get("name") == name
        ):
            least = max(least, _number(_get(hpa.props, "spec", "minReplicas")) or 1.0)
    return least


def pod_disruption_budget(resources: Sequence[Resource], config: PolicyConfig) -> list[tuple[Resource, str]]:
    budgets = [r for r in resources if _is_kind(r, "PodDisruptionBudget")]
    workloads = _workloads(resources)
    problems: list[tuple[Resource, str]] = []
    for w in workloads:
        if not _is_kind(w, "Deployment", "StatefulSet"):
            continue
        replicas = _replicas(w, resources)
        if not (_is_serving_deployment(w) or replicas >= 2):
            continue
        labels = _pod_labels(w)
        covered = any(
            _namespace(b) == _namespace(w)
            and isinstance(_get(b.props, "spec", "selector"), Mapping)
            and _selects(_map(_get(b.props, "spec", "selector")), labels)
            for b in budgets
        )
        if not covered:
            role = "serves a model" if _is_serving_deployment(w) else f"runs {_fmt(replicas)} replicas"
            problems.append(
                (
                    w,
                    f"{role} but no PodDisruptionBudget selects its pods (labels {dict(labels)}); a "
                    "node drain could take every replica down at once",
                )
            )
    for b in budgets:
        selector = _get(b.props, "spec", "selector")
        if not isinstance(selector, Mapping) or not _selected_by(selector, _namespace(b), workloads):
            problems.append(
                (
                    b,
                    f"selects no pod of this stack (selector {_plain(selector)!r}; a missing selector "
                    "selects nothing); a stale budget protects nothing: fix its selector or delete it",
                )
            )
    return problems


def network_policy_coverage(
    resources: Sequence[Resource], config: PolicyConfig
) -> list[tuple[Resource, str]]:
    policies = [r for r in resources if _is_kind(r, "NetworkPolicy")]
    workloads = _workloads(resources)
    problems: list[tuple[Resource, str]] = []
    for w in workloads:
        if not any(
            _namespace(p) == _namespace(w)
            and _selects(_map(_get(p.props, "spec", "podSelector")), _pod_labels(w))
            for p in policies
        ):
            problems.append(
                (
                    w,
                    f"runs pods (labels {dict(_pod_labels(w))}) that no NetworkPolicy in namespace "
                    f"'{_namespace(w)}' selects, so any pod in the cluster can reach them and they can "
                    "reach anything: add a default-deny policy and allow what they need",
                )
            )
    for p in policies:
        selector = _map(_get(p.props, "spec", "podSelector"))
        # An empty podSelector is namespace-wide (a default deny): it also covers pods made later.
        if not _is_empty_selector(selector) and not _selected_by(selector, _namespace(p), workloads):
            problems.append(
                (
                    p,
                    f"selects no pod of this stack (podSelector {_plain(selector)!r}); a stale "
                    "selector protects nothing and hides the pods it was meant for: fix it or delete it",
                )
            )
    return problems


def _bound_service_accounts(resources: Sequence[Resource]) -> set[tuple[str, str]]:
    """(namespace, name) of every ServiceAccount a RoleBinding or ClusterRoleBinding names."""
    bound = set()
    for b in resources:
        if _is_kind(b, "RoleBinding", "ClusterRoleBinding"):
            for subject in _list(b.props.get("subjects")):
                s = _map(subject)
                if s.get("kind") == "ServiceAccount":
                    bound.add((str(s.get("namespace") or _namespace(b)), str(s.get("name"))))
    return bound


def service_account_token(resources: Sequence[Resource], config: PolicyConfig) -> list[tuple[Resource, str]]:
    bound = _bound_service_accounts(resources)
    accounts = {
        (_namespace(a), str(_get(a.props, "metadata", "name") or a.name)): a.props
        for a in resources
        if _is_kind(a, "ServiceAccount")
    }
    problems: list[tuple[Resource, str]] = []
    for w in _workloads(resources):
        pod = _pod_spec(w) or {}
        account = str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "default")
        mount = pod.get("automountServiceAccountToken")
        if mount is None:
            mount = _map(accounts.get((_namespace(w), account))).get("automountServiceAccountToken")
        if mount is not False and (_namespace(w), account) not in bound:
            problems.append(
                (
                    w,
                    f"mounts a token of service account '{account}', which no RoleBinding or "
                    "ClusterRoleBinding in this stack grants anything, so the pod does not need the "
                    "API; a compromised container could use the token against it: set "
                    "automountServiceAccountToken: false (or bind the account to the role it needs)",
                )
            )
    return problems


@dataclass(frozen=True)
class ResourceRule:
    name: str
    description: str
    check: Callable[[Resource, PolicyConfig], list[str]]
    config_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    check: Callable[[Sequence[Resource], PolicyConfig], list[tuple[Resource, str]]]
    config_keys: tuple[str, ...] = ()


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule(
        "container-security-context",
        "Containers run as non-root with a high UID, a read-only root filesystem, no privilege "
        "escalation, all capabilities dropped and a RuntimeDefault or Localhost seccomp profile, in "
        "pods without host namespaces, hostPath volumes or host ports.",
        container_security_context,
        ("min_run_as_user",),
    ),
    ResourceRule(
        "container-resources-and-probes",
        "Every container sets CPU and memory requests and limits, and long-running containers "
        "have a readiness probe and a liveness probe that is a different check.",
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
        "The artifact bucket has versioning, public access blocked, server-side encryption and a "
        "TLS-only policy (in production stacks no plain-HTTP endpoint).",
        artifact_bucket_protected,
        ("digest_required_stacks",),
    ),
    ResourceRule(
        "serving-rollout-safe",
        "Serving Deployments roll out with maxUnavailable 0, minReadySeconds, progressDeadlineSeconds "
        "and revisionHistoryLimit, and stop with a preStop sleep inside a grace period that covers "
        "the drain.",
        serving_rollout_safe,
    ),
    ResourceRule(
        "topology-spread",
        "Serving Deployments in digest-required stacks spread their pods over nodes or zones.",
        topology_spread,
        ("digest_required_stacks",),
    ),
    ResourceRule(
        "no-bare-pods",
        "Pods are created by a controller (Deployment, Job), never declared bare.",
        no_bare_pods,
    ),
    ResourceRule(
        "no-default-namespace",
        "Every namespaced Kubernetes object names its namespace explicitly, and it is not default.",
        no_default_namespace,
    ),
    ResourceRule(
        "recommended-labels",
        "Kubernetes objects and pod templates carry the app.kubernetes.io name, component, part-of "
        "and managed-by labels and mlops.dev/stack.",
        recommended_labels,
    ),
    ResourceRule(
        "stateful-resources-protected",
        "In digest-required stacks, volumes and the artifact bucket have the protect option.",
        stateful_resources_protected,
        ("digest_required_stacks",),
    ),
)

STACK_RULES: tuple[StackRule, ...] = (
    StackRule(
        "pod-disruption-budget",
        "Serving Deployments and workloads of two or more replicas have a PodDisruptionBudget, and "
        "every budget selects some pod.",
        pod_disruption_budget,
    ),
    StackRule(
        "network-policy-coverage",
        "Every pod is selected by some NetworkPolicy, and every NetworkPolicy selects some pod.",
        network_policy_coverage,
    ),
    StackRule(
        "service-account-token",
        "Pods mount a service-account token only when a RoleBinding in the stack grants that account "
        "something.",
        service_account_token,
    ),
)


def _describe(r: Resource) -> str:
    if _is_bucket(r):
        return "artifact bucket"
    return _kind(r.type) or "resource"


def violation(rule: str, resource: Resource, problem: str) -> Violation:
    message = f"[{rule}] {_describe(resource)} '{resource.name}': {problem}"
    return Violation(rule, resource.name, message, resource.type)


def check_resources(
    resources: Sequence[Mapping[str, Any]], config: Mapping[str, Any] | None = None
) -> list[Violation]:
    """Run every rule over a whole render.

    `resources` are `{type, name, props}` with optional `stack`, `protect` and `urn`; `config` holds
    the flattened pack config (allowed_service_types, digest_required_stacks, min_run_as_user).
    """
    cfg = PolicyConfig.from_mapping(config)
    items = [Resource.from_mapping(r) for r in resources]
    found: list[Violation] = []
    for resource in items:
        for rule in RESOURCE_RULES:
            found.extend(violation(rule.name, resource, p) for p in rule.check(resource, cfg))
    for stack_rule in STACK_RULES:
        found.extend(violation(stack_rule.name, r, p) for r, p in stack_rule.check(items, cfg))
    return found
