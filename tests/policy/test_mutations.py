"""The policy pack proven by mutation on the real renders of both stacks.

Every object of the dev and prod renders (the program under Pulumi's mocks, `infra.render`, with
each stack's own YAML config and policy config) gets, for every rule, each violating mutation that
applies to its kind. After one mutation of one object, the violations the render did not already
have must be exactly that rule's, and must name that object (resource rules: only that object;
stack rules may also name the objects the change leaves unprotected). The unmutated renders pass
every rule. A rule that never fires, fires for another object or drags another rule along fails.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.render import run_program
from policy.rules import (
    CLUSTER_SCOPED_KINDS,
    RECOMMENDED_LABELS,
    RESOURCE_RULES,
    STACK_RULES,
    PolicyConfig,
    check_resources,
    stack_pack_config,
)

REPO = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod")
STACK_RULE_NAMES = {r.name for r in STACK_RULES}
ALL_RULES = {r.name for r in RESOURCE_RULES} | STACK_RULE_NAMES

Props = dict[str, Any]
Resource = dict[str, Any]
Renders = dict[str, list[Resource]]


@pytest.fixture(scope="module")
def renders() -> Renders:
    return {stack: run_program(stack, REPO).policy_resources() for stack in STACKS}


# ---- what a mutation applies to ----

WORKLOADS = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:batch/v1:Job",
    "kubernetes:batch/v1:CronJob",
    "kubernetes:core/v1:Pod",
}
LONG_RUNNING = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
}
# Objects that others find by namespace: moving a workload leaves the NetworkPolicy and budget
# that selected its pods selecting nothing, and moving one of those leaves pods unprotected, which
# their own rules report. The namespace rule, the same code for every kind, is proven on the others.
RELATED_BY_NAMESPACE = {"NetworkPolicy", "PodDisruptionBudget"}


def production(stack: str) -> bool:
    """The stack is held to the production rules by its policy config."""
    return stack in PolicyConfig.from_mapping(stack_pack_config(stack)).digest_required_stacks


def template(r: Resource) -> Props:
    spec = r["props"]["spec"]
    return spec["jobTemplate"]["spec"]["template"] if r["type"].endswith(":CronJob") else spec["template"]


def pod(r: Resource) -> Props:
    return r["props"]["spec"] if r["type"].endswith(":Pod") else template(r)["spec"]


def app(r: Resource) -> Props:
    """The first app container."""
    return pod(r)["containers"][0]


def container_sc(r: Resource) -> Props:
    return app(r).setdefault("securityContext", {})


def is_workload(r: Resource, stack: str) -> bool:
    return r["type"] in WORKLOADS


def is_long_running(r: Resource, stack: str) -> bool:
    return r["type"] in LONG_RUNNING


def is_serving(r: Resource, stack: str) -> bool:
    return (
        r["type"] == "kubernetes:apps/v1:Deployment"
        and template(r)["metadata"]["labels"].get("app.kubernetes.io/component") == "serving"
    )


def is_prod_serving(r: Resource, stack: str) -> bool:
    return is_serving(r, stack) and production(stack)


def kind(r: Resource) -> str:
    return str(r["props"].get("kind", "")) if r["type"].startswith("kubernetes:") else ""


def is_object(r: Resource, stack: str) -> bool:
    return bool(kind(r))


def is_namespaced(r: Resource, stack: str) -> bool:
    return is_object(r, stack) and kind(r) not in CLUSTER_SCOPED_KINDS


def stands_alone(r: Resource, stack: str) -> bool:
    """A namespaced object no other object finds by its namespace."""
    return is_namespaced(r, stack) and kind(r) not in RELATED_BY_NAMESPACE and not is_workload(r, stack)


def is_bucket(r: Resource, stack: str) -> bool:
    return r["props"].get("mlops_kind") == "s3-bucket"


def of_kind(*kinds: str) -> Callable[[Resource, str], bool]:
    return lambda r, stack: kind(r) in kinds


# ---- mutations: each makes one object violate exactly one rule ----


@dataclass(frozen=True)
class Mutation:
    rule: str
    what: str
    applies: Callable[[Resource, str], bool]
    mutate: Callable[[Resource], None]
    """Changes the (deep-copied) resource in place: props, type, protect."""


def set_in(get: Callable[[Resource], Props], **values: Any) -> Callable[[Resource], None]:
    return lambda r: get(r).update(values)


def drop(get: Callable[[Resource], Props], *keys: str) -> Callable[[Resource], None]:
    def mutate(r: Resource) -> None:
        for key in keys:
            get(r).pop(key, None)

    return mutate


def unset_uid(r: Resource) -> None:
    pod(r).get("securityContext", {}).pop("runAsUser", None)
    for c in pod(r).get("initContainers", []) + pod(r)["containers"]:
        c.get("securityContext", {}).pop("runAsUser", None)


def unset_seccomp(r: Resource) -> None:
    pod(r).get("securityContext", {}).pop("seccompProfile", None)
    for c in pod(r).get("initContainers", []) + pod(r)["containers"]:
        c.get("securityContext", {}).pop("seccompProfile", None)


def add_env(name: str, value: str) -> Callable[[Resource], None]:
    return lambda r: app(r).setdefault("env", []).append({"name": name, "value": value})


def same_liveness(r: Resource) -> None:
    app(r)["livenessProbe"] = copy.deepcopy(app(r)["readinessProbe"])


def fail_gates(r: Resource) -> None:
    r["props"]["metadata"].get("annotations", {}).pop("mlops.dev/gates", None)
    template(r)["metadata"].setdefault("annotations", {})["mlops.dev/gates"] = "failed"


def drop_drain_env(r: Resource) -> None:
    app(r)["env"] = [e for e in app(r)["env"] if e["name"] != "MLOPS_DRAIN_SECONDS"]


def to_bare_pod(r: Resource) -> None:
    """The workload's pod template declared as a Pod of the same name."""
    meta, tmpl = r["props"]["metadata"], template(r)
    r["type"] = "kubernetes:core/v1:Pod"
    r["props"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **{k: v for k, v in meta.items() if k in ("name", "namespace")},
            "labels": {**meta.get("labels", {}), **tmpl["metadata"].get("labels", {})},
            "annotations": tmpl["metadata"].get("annotations", {}),
        },
        "spec": tmpl["spec"],
    }


def drop_label(where: Callable[[Resource], Props], label: str) -> Callable[[Resource], None]:
    return lambda r: where(r)["labels"].pop(label)


def unprotect(r: Resource) -> None:
    r["protect"] = False


def selects_nothing(field: str) -> Callable[[Resource], None]:
    return set_in(spec, **{field: {"matchLabels": {"app.kubernetes.io/name": "nobody"}}})


def mounts_default_token(r: Resource) -> None:
    pod(r)["automountServiceAccountToken"] = True
    pod(r).pop("serviceAccountName", None)


def is_stateful_in_prod(r: Resource, stack: str) -> bool:
    stateful = kind(r) in ("PersistentVolumeClaim", "PersistentVolume") or is_bucket(r, stack)
    return stateful and production(stack)


def has_labels(r: Resource, stack: str) -> bool:
    return is_object(r, stack) and bool(r["props"]["metadata"].get("labels"))


def has_template(r: Resource, stack: str) -> bool:
    return is_workload(r, stack) and r["type"] != "kubernetes:core/v1:Pod"


def props(r: Resource) -> Props:
    return r["props"]


def spec(r: Resource) -> Props:
    return r["props"]["spec"]


def metadata(r: Resource) -> Props:
    return r["props"]["metadata"]


MUTATIONS: tuple[Mutation, ...] = (
    # container-security-context
    Mutation("container-security-context", "root-uid", is_workload, set_in(container_sc, runAsUser=0)),
    Mutation("container-security-context", "low-uid", is_workload, set_in(container_sc, runAsUser=1000)),
    Mutation("container-security-context", "uid-unset", is_workload, unset_uid),
    Mutation(
        "container-security-context", "non-root-off", is_workload, set_in(container_sc, runAsNonRoot=False)
    ),
    Mutation(
        "container-security-context",
        "privilege-escalation",
        is_workload,
        set_in(container_sc, allowPrivilegeEscalation=True),
    ),
    Mutation("container-security-context", "privileged", is_workload, set_in(container_sc, privileged=True)),
    Mutation(
        "container-security-context",
        "capabilities-kept",
        is_workload,
        set_in(container_sc, capabilities={"drop": []}),
    ),
    Mutation(
        "container-security-context",
        "capability-added",
        is_workload,
        set_in(container_sc, capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    ),
    Mutation(
        "container-security-context",
        "seccomp-unconfined",
        is_workload,
        set_in(container_sc, seccompProfile={"type": "Unconfined"}),
    ),
    Mutation("container-security-context", "seccomp-unset", is_workload, unset_seccomp),
    Mutation(
        "container-security-context",
        "writable-root",
        is_workload,
        set_in(container_sc, readOnlyRootFilesystem=False),
    ),
    Mutation("container-security-context", "host-network", is_workload, set_in(pod, hostNetwork=True)),
    Mutation("container-security-context", "host-pid", is_workload, set_in(pod, hostPID=True)),
    Mutation("container-security-context", "host-ipc", is_workload, set_in(pod, hostIPC=True)),
    Mutation(
        "container-security-context",
        "host-path",
        is_workload,
        lambda r: pod(r).setdefault("volumes", []).append({"name": "node", "hostPath": {"path": "/"}}),
    ),
    Mutation(
        "container-security-context",
        "host-port",
        is_workload,
        lambda r: app(r).setdefault("ports", []).append({"containerPort": 9999, "hostPort": 9999}),
    ),
    # container-resources-and-probes
    Mutation(
        "container-resources-and-probes",
        "no-requests",
        is_workload,
        drop(lambda r: app(r)["resources"], "requests"),
    ),
    Mutation(
        "container-resources-and-probes",
        "no-limits",
        is_workload,
        drop(lambda r: app(r)["resources"], "limits"),
    ),
    Mutation("container-resources-and-probes", "no-readiness", is_long_running, drop(app, "readinessProbe")),
    Mutation("container-resources-and-probes", "no-liveness", is_long_running, drop(app, "livenessProbe")),
    Mutation("container-resources-and-probes", "liveness-is-readiness", is_long_running, same_liveness),
    # image-pinned
    Mutation("image-pinned", "latest", is_workload, set_in(app, image="registry.example/app:latest")),
    Mutation("image-pinned", "untagged", is_workload, set_in(app, image="registry.example/app")),
    Mutation(
        "image-pinned",
        "tag-in-production",
        lambda r, stack: is_workload(r, stack) and production(stack),
        set_in(app, image="registry.example/app:1.0"),
    ),
    # service-type-allowed
    Mutation("service-type-allowed", "load-balancer", of_kind("Service"), set_in(spec, type="LoadBalancer")),
    # no-plaintext-secret-env
    Mutation("no-plaintext-secret-env", "password-value", is_workload, add_env("DB_PASSWORD", "hunter2")),
    Mutation(
        "no-plaintext-secret-env",
        "url-with-password",
        is_workload,
        add_env("BACKEND_STORE", "postgresql://mlflow:hunter2@db:5432/mlflow"),
    ),
    # release-gates-passed
    Mutation("release-gates-passed", "gates-failed", is_prod_serving, fail_gates),
    # artifact-bucket-protected
    Mutation("artifact-bucket-protected", "unversioned", is_bucket, set_in(props, versioning=False)),
    Mutation("artifact-bucket-protected", "public", is_bucket, set_in(props, block_public_access=False)),
    Mutation("artifact-bucket-protected", "unencrypted", is_bucket, set_in(props, encryption="none")),
    Mutation(
        "artifact-bucket-protected",
        "tls-not-required",
        is_bucket,
        set_in(props, endpoint_url="https://s3.example.internal", tls_only=False),
    ),
    # serving-rollout-safe
    Mutation(
        "serving-rollout-safe",
        "max-unavailable",
        is_serving,
        set_in(spec, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}),
    ),
    Mutation("serving-rollout-safe", "no-min-ready", is_serving, drop(spec, "minReadySeconds")),
    Mutation(
        "serving-rollout-safe", "no-progress-deadline", is_serving, drop(spec, "progressDeadlineSeconds")
    ),
    Mutation("serving-rollout-safe", "no-revision-history", is_serving, drop(spec, "revisionHistoryLimit")),
    Mutation("serving-rollout-safe", "no-pre-stop", is_serving, drop(app, "lifecycle")),
    Mutation("serving-rollout-safe", "no-drain-bound", is_serving, drop_drain_env),
    Mutation("serving-rollout-safe", "short-grace", is_serving, set_in(pod, terminationGracePeriodSeconds=5)),
    # topology-spread
    Mutation("topology-spread", "no-spread", is_prod_serving, drop(pod, "topologySpreadConstraints")),
    # no-bare-pods
    Mutation("no-bare-pods", "bare-pod", has_template, to_bare_pod),
    # no-default-namespace
    Mutation(
        "no-default-namespace",
        "in-default",
        stands_alone,
        set_in(metadata, namespace="default"),
    ),
    Mutation(
        "no-default-namespace",
        "no-namespace",
        stands_alone,
        drop(metadata, "namespace"),
    ),
    # recommended-labels
    *(
        Mutation("recommended-labels", f"object-without-{label}", has_labels, drop_label(metadata, label))
        for label in RECOMMENDED_LABELS
    ),
    Mutation(
        "recommended-labels",
        "template-without-managed-by",
        has_template,
        drop_label(lambda r: template(r)["metadata"], "app.kubernetes.io/managed-by"),
    ),
    # stateful-resources-protected
    Mutation("stateful-resources-protected", "unprotected", is_stateful_in_prod, unprotect),
    # stack rules
    Mutation(
        "pod-disruption-budget",
        "budget-selects-nothing",
        of_kind("PodDisruptionBudget"),
        selects_nothing("selector"),
    ),
    Mutation(
        "network-policy-coverage",
        "policy-selects-nothing",
        of_kind("NetworkPolicy"),
        selects_nothing("podSelector"),
    ),
    Mutation("service-account-token", "default-token-mounted", is_workload, mounts_default_token),
)


# ---- the harness ----


def _key(v: Any) -> tuple[str, str, str, str]:
    return (v.rule, v.resource_type, v.resource, v.message)


def run_mutation(mutation: Mutation, renders: Renders) -> tuple[int, list[str]]:
    """(objects mutated, what went wrong) over every object of every render."""
    applied, failures = 0, []
    for stack, resources in renders.items():
        config = stack_pack_config(stack)
        before = {_key(v) for v in check_resources(resources, config)}
        for index, resource in enumerate(resources):
            if not mutation.applies(resource, stack):
                continue
            mutated = list(resources)
            mutated[index] = copy.deepcopy(resource)
            mutation.mutate(mutated[index])
            applied += 1
            target = (mutated[index]["type"], resource["name"])
            new = [v for v in check_resources(mutated, config) if _key(v) not in before]
            rules = {v.rule for v in new}
            named = {(v.resource_type, v.resource) for v in new}
            exact = named == {target} or (mutation.rule in STACK_RULE_NAMES and target in named)
            if rules != {mutation.rule} or not exact:
                found = [(v.rule, v.resource_type, v.resource) for v in new] or "nothing"
                failures.append(f"{stack} {target[0]} {target[1]!r}: found {found}")
    return applied, failures


def _ids(m: Mutation) -> str:
    return f"{m.rule}:{m.what}"


@pytest.mark.parametrize("stack", STACKS)
def test_the_unmutated_renders_pass_every_rule(renders: Renders, stack: str) -> None:
    violations = check_resources(renders[stack], stack_pack_config(stack))
    assert violations == [], "\n".join(v.message for v in violations)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=_ids)
def test_each_mutation_fires_exactly_its_rule_on_every_object(mutation: Mutation, renders: Renders) -> None:
    applied, failures = run_mutation(mutation, renders)
    assert applied, f"{_ids(mutation)} applies to no object of the dev and prod renders"
    assert not failures, f"{_ids(mutation)} on {applied} objects:\n" + "\n".join(failures)


def test_every_rule_has_a_mutation() -> None:
    assert {m.rule for m in MUTATIONS} == ALL_RULES
    assert len({_ids(m) for m in MUTATIONS}) == len(MUTATIONS)


def _objects(renders: Renders) -> Iterator[tuple[str, Resource]]:
    for stack, resources in renders.items():
        for resource in resources:
            yield stack, resource


def test_the_mutations_reach_every_kind_of_object_in_the_renders(renders: Renders) -> None:
    """Every Kubernetes kind, the bucket and every workload of both renders is mutated by something."""
    untouched = {
        (stack, r["type"], r["name"])
        for stack, r in _objects(renders)
        if (is_object(r, stack) or is_bucket(r, stack)) and not any(m.applies(r, stack) for m in MUTATIONS)
    }
    assert untouched == set()
    assert any(is_bucket(r, s) for s, r in _objects(renders)), "no bucket in either render"
    assert any(is_stateful_in_prod(r, s) for s, r in _objects(renders)), "nothing stateful in prod"


def test_the_harness_fails_a_rule_that_does_not_fire_or_fires_elsewhere(renders: Renders) -> None:
    def renamed(r: Resource) -> None:
        r["name"] = "someone-else"
        app(r)["image"] = "registry.example/app:latest"

    cases = {
        "wrong rule": Mutation("no-bare-pods", "x", is_workload, set_in(app, image="x:latest")),
        "no violation": Mutation("image-pinned", "x", is_workload, lambda r: None),
        "another object": Mutation("image-pinned", "x", is_workload, renamed),
        "another rule too": Mutation(
            "image-pinned", "x", is_workload, set_in(app, image="x:latest", resources={})
        ),
    }
    for case, mutation in cases.items():
        applied, failures = run_mutation(mutation, renders)
        assert applied and len(failures) == applied, (case, failures)
