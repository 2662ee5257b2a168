"""Each policy rule: compliant, non-compliant, missing-property and config cases; plus the pack wiring."""

from __future__ import annotations

import copy
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy.rules import PolicyConfig, Violation, check_resources, stack_of_urn

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "a" * 64
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
JOB = "kubernetes:batch/v1:Job"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DYNAMIC = "pulumi-python:dynamic:Resource"


def _container(name: str = "server", image: str = f"registry.local/serving@{DIGEST}") -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "10"]}}},
        "env": [
            {"name": "MODEL_URI", "value": "s3://artifacts/model/abc123/"},
            {"name": "MLOPS_DRAIN_SECONDS", "value": "10"},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "secret"}},
            },
        ],
    }


def _pod_spec() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "containers": [_container()],
    }


def _labels(stack: str, component: str = "serving") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "iris",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "mlops",
        "app.kubernetes.io/managed-by": "pulumi",
        "mlops.dev/stack": stack,
    }


SELECTOR = {"matchLabels": {"app.kubernetes.io/name": "iris", "app.kubernetes.io/component": "serving"}}


def deployment(stack: str = "prod") -> dict[str, Any]:
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "labelSelector": SELECTOR}
    return {
        "type": DEPLOYMENT,
        "name": "serving-deployment",
        "props": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"labels": _labels(stack), "namespace": "ml"},
            "spec": {
                "replicas": 2,
                "minReadySeconds": 10,
                "progressDeadlineSeconds": 600,
                "revisionHistoryLimit": 5,
                "selector": SELECTOR,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": _labels(stack), "annotations": {"mlops.dev/gates": "passed"}},
                    "spec": {
                        **_pod_spec(),
                        "terminationGracePeriodSeconds": 45,
                        "topologySpreadConstraints": [spread],
                    },
                },
            },
        },
    }


def pdb(stack: str = "prod") -> dict[str, Any]:
    return {
        "type": PDB,
        "name": "serving-pdb",
        "props": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"labels": _labels(stack), "namespace": "ml"},
            "spec": {"minAvailable": 1, "selector": SELECTOR},
        },
    }


def job(stack: str = "dev") -> dict[str, Any]:
    container = _container("train", f"registry.local/training@{DIGEST}")
    del container["readinessProbe"], container["livenessProbe"], container["lifecycle"]
    return {
        "type": JOB,
        "name": "training-job",
        "props": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"labels": _labels(stack, "training"), "namespace": "ml"},
            "spec": {
                "template": {
                    "metadata": {"labels": _labels(stack, "training")},
                    "spec": {**_pod_spec(), "containers": [container], "restartPolicy": "Never"},
                }
            },
        },
    }


def service(service_type: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "iris"}}
    if service_type:
        spec["type"] = service_type
    return {
        "type": SERVICE,
        "name": "serving-service",
        "props": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"labels": _labels("prod"), "namespace": "ml"},
            "spec": spec,
        },
    }


def network_policy(stack: str = "prod", selector: dict[str, Any] | None = None) -> dict[str, Any]:
    """A default deny for namespace ml (an empty podSelector selects every pod there)."""
    return {
        "type": NETWORK_POLICY,
        "name": "default-deny",
        "props": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"labels": _labels(stack), "namespace": "ml"},
            "spec": {"podSelector": selector or {}, "policyTypes": ["Ingress", "Egress"]},
        },
    }


def bucket(**overrides: Any) -> dict[str, Any]:
    props = {
        "bucket_name": "mlops-artifacts",
        "mlops_kind": "s3-bucket",
        "versioning": True,
        "block_public_access": True,
        "encryption": "AES256",
        "tls_only": True,
    }
    props.update(overrides)
    return {"type": DYNAMIC, "name": "registry-artifacts", "props": props}


def render(stack: str = "prod") -> list[dict[str, Any]]:
    return [deployment(stack), pdb(stack), job(), service(), bucket(), network_policy(stack)]


def with_pdb_and_policy(*resources: dict[str, Any]) -> list[dict[str, Any]]:
    """What a serving Deployment needs around it to pass the stack rules."""
    return [*resources, pdb(), network_policy()]


def pod_spec_of(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["props"]["spec"]["template"]["spec"]
    return spec


def of_rule(violations: list[Violation], rule: str) -> list[Violation]:
    return [v for v in violations if v.rule == rule]


def assert_violates(
    resources: list[dict[str, Any]], rule: str, resource: str, *words: str, **config: Any
) -> None:
    found = of_rule(check_resources(resources, config or None), rule)
    assert found, f"{rule} did not fire on {resource}"
    for v in found:
        assert v.resource == resource
        assert f"[{rule}]" in v.message and f"'{resource}'" in v.message, v.message
    text = " ".join(v.message for v in found)
    for word in words:
        assert word in text, text


def test_compliant_render_passes_every_rule() -> None:
    assert check_resources(render("prod")) == []
    assert check_resources(render("dev")) == []


# ---- 1. container-security-context ----


def test_security_context_non_compliant() -> None:
    d = deployment()
    c = d["props"]["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"].update(allowPrivilegeEscalation=True, readOnlyRootFilesystem=False)
    c["securityContext"]["capabilities"] = {"drop": ["NET_RAW"], "add": ["SYS_ADMIN"]}
    assert_violates(
        [d, pdb()],
        "container-security-context",
        "serving-deployment",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "capabilities.drop",
        "SYS_ADMIN",
        "root",
    )


def test_security_context_missing_everywhere_and_root_user() -> None:
    d = deployment()
    spec = d["props"]["spec"]["template"]["spec"]
    del spec["securityContext"]
    del spec["containers"][0]["securityContext"]
    spec["initContainers"] = [{"name": "fetch", "image": f"busybox@{DIGEST}"}]
    assert_violates(
        [d, pdb()], "container-security-context", "serving-deployment", "runAsNonRoot", "seccomp", "unset"
    )
    messages = " ".join(v.message for v in check_resources([d, pdb()]))
    assert "init container 'fetch'" in messages and "container 'server'" in messages

    d = deployment()
    pod_spec_of(d)["containers"][0]["securityContext"]["runAsUser"] = 0
    assert_violates(
        [d, pdb()], "container-security-context", "serving-deployment", "runAsUser >= 10000 (is 0"
    )


def test_security_context_container_level_overrides_pod_level() -> None:
    d = deployment()
    spec = pod_spec_of(d)
    spec["securityContext"] = {}  # everything set on the container instead
    spec["containers"][0]["securityContext"].update(
        runAsNonRoot=True, runAsUser=20000, seccompProfile={"type": "Localhost", "localhostProfile": "x.json"}
    )
    assert of_rule(check_resources([d, pdb()]), "container-security-context") == []
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = False  # overrides the pod's true
    spec["securityContext"] = {"runAsNonRoot": True}
    assert_violates([d, pdb()], "container-security-context", "serving-deployment", "runAsNonRoot")
    d = deployment()
    pod_spec_of(d)["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert_violates([d], "container-security-context", "serving-deployment", "(is Unconfined)")


@pytest.mark.parametrize("uid", [1000, 9999, 472.0])
def test_low_uid_rejected_and_the_bound_is_configurable(uid: float) -> None:
    d = deployment()
    pod_spec_of(d)["securityContext"]["runAsUser"] = uid
    assert_violates([d], "container-security-context", "serving-deployment", f"is {int(uid)};")
    assert of_rule(check_resources([d], {"min_run_as_user": 472}), "container-security-context") == []


def test_host_namespaces_paths_and_ports_rejected() -> None:
    d = deployment()
    spec = pod_spec_of(d)
    spec.update(
        hostNetwork=True, hostPID=True, hostIPC=True, volumes=[{"name": "n", "hostPath": {"path": "/"}}]
    )
    spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]
    assert_violates(
        [d],
        "container-security-context",
        "serving-deployment",
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "hostPath volume 'n'",
        "hostPort 80",
    )


# ---- 2. container-resources-and-probes ----


def test_resources_and_probes_non_compliant() -> None:
    d = deployment()
    c = d["props"]["spec"]["template"]["spec"]["containers"][0]
    del c["resources"]["limits"]["memory"], c["livenessProbe"]
    assert_violates(
        [d, pdb()], "container-resources-and-probes", "serving-deployment", "limits.memory", "livenessProbe"
    )


def test_resources_missing_entirely() -> None:
    d = deployment()
    c = d["props"]["spec"]["template"]["spec"]["containers"][0]
    del c["resources"], c["readinessProbe"], c["livenessProbe"]
    assert_violates(
        [d, pdb()],
        "container-resources-and-probes",
        "serving-deployment",
        "requests.cpu",
        "limits.cpu",
        "readinessProbe or livenessProbe",
    )


def test_jobs_need_resources_but_not_probes() -> None:
    j = job()
    assert of_rule(check_resources([j]), "container-resources-and-probes") == []
    del j["props"]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert_violates([j], "container-resources-and-probes", "training-job", "requests.memory")


def test_liveness_must_be_a_different_check_than_readiness() -> None:
    d = deployment()
    c = pod_spec_of(d)["containers"][0]
    c["livenessProbe"] = {**c["readinessProbe"], "failureThreshold": 6, "periodSeconds": 30}
    assert_violates([d], "container-resources-and-probes", "serving-deployment", "same check", "/ready")
    c["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    assert of_rule(check_resources([d]), "container-resources-and-probes") == []


def test_a_pod_that_runs_to_completion_needs_no_probes() -> None:
    bare = copy.deepcopy(job())
    bare["type"], props = "kubernetes:core/v1:Pod", bare["props"]
    bare["props"] = {"kind": "Pod", "metadata": props["metadata"], "spec": props["spec"]["template"]["spec"]}
    assert of_rule(check_resources([bare]), "container-resources-and-probes") == []
    bare["props"]["spec"]["restartPolicy"] = "Always"
    assert_violates([bare], "container-resources-and-probes", "training-job", "readinessProbe")


# ---- 3. image-pinned ----


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("registry.local/serving:latest", (":latest",)),
        ("registry.local:5000/serving", ("no tag",)),
        ("registry.local/serving:v1", ("not pinned by digest", "'prod'")),
    ],
)
def test_image_non_compliant_in_prod(image: str, words: tuple[str, ...]) -> None:
    d = deployment("prod")
    d["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = image
    assert_violates([d, pdb()], "image-pinned", "serving-deployment", image, *words)


def test_image_missing() -> None:
    d = deployment()
    del d["props"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert_violates([d, pdb()], "image-pinned", "serving-deployment", "no image")


def test_image_tag_is_enough_outside_digest_stacks_and_config_changes_that() -> None:
    d = deployment("dev")
    d["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/serving:v1"
    assert of_rule(check_resources([d, pdb("dev")]), "image-pinned") == []
    assert_violates(
        [d, pdb("dev")], "image-pinned", "serving-deployment", "'dev'", digest_required_stacks=["dev", "prod"]
    )
    prod = deployment("prod")
    prod["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/serving:v1"
    assert of_rule(check_resources([prod, pdb()], {"digest_required_stacks": []}), "image-pinned") == []
    # :latest is never fine, whatever the config says
    d["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = "serving:latest"
    assert_violates(
        [d, pdb("dev")], "image-pinned", "serving-deployment", ":latest", digest_required_stacks=[]
    )


# ---- 4. service-type-allowed ----


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_exposing_service_types_rejected_unless_allowed(service_type: str) -> None:
    assert_violates([service(service_type)], "service-type-allowed", "serving-service", service_type)
    allowed = check_resources([service(service_type)], {"allowed_service_types": [service_type]})
    assert of_rule(allowed, "service-type-allowed") == []


def test_service_without_type_is_cluster_ip() -> None:
    assert of_rule(check_resources([service(None), service("ClusterIP")]), "service-type-allowed") == []


def test_config_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="allowed values"):
        PolicyConfig.from_mapping({"allowed_service_types": ["Ingress"]})
    with pytest.raises(ValueError, match="list of strings"):
        PolicyConfig.from_mapping({"digest_required_stacks": "prod"})
    with pytest.raises(ValueError, match="unknown policy config keys"):
        PolicyConfig.from_mapping({"digest_stacks": ["prod"]})
    for bad in (0, "10000", True, 1.5):
        with pytest.raises(ValueError, match="min_run_as_user must be an integer >= 1"):
            PolicyConfig.from_mapping({"min_run_as_user": bad})
    assert PolicyConfig.from_mapping({"min_run_as_user": 20000.0}).min_run_as_user == 20000
    assert PolicyConfig.from_mapping(None) == PolicyConfig(frozenset(), frozenset({"prod"}), 10000)


# ---- 5. no-plaintext-secret-env ----


@pytest.mark.parametrize(
    "env",
    [
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "MLFLOW_TRACKING_TOKEN", "value": "abc"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"},
        {"name": "DATABASE_URL", "value": "postgres://db/mlflow"},
        {"name": "API_KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "BACKEND_STORE", "value": "postgresql://mlflow:hunter2@db:5432/mlflow"},
    ],
)
def test_plaintext_secret_env_rejected(env: dict[str, Any]) -> None:
    d = deployment()
    d["props"]["spec"]["template"]["spec"]["containers"][0]["env"].append(env)
    assert_violates([d, pdb()], "no-plaintext-secret-env", "serving-deployment", env["name"], "secretKeyRef")


def test_secret_env_rule_compliant_and_missing_env() -> None:
    d = deployment()
    d["props"]["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "MONKEY_COUNT", "value": "3"},
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]
    assert of_rule(check_resources([d, pdb()]), "no-plaintext-secret-env") == []
    del d["props"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert of_rule(check_resources([d, pdb()]), "no-plaintext-secret-env") == []
    j = job()  # initContainers and Jobs are covered too
    j["props"]["spec"]["template"]["spec"]["initContainers"] = [
        {**_container("init"), "env": [{"name": "TOKEN", "value": "x"}]}
    ]
    assert_violates([j], "no-plaintext-secret-env", "training-job", "init container 'init'", "TOKEN")


# ---- 6. serving-rollout-safe ----


def test_serving_rollout_max_unavailable() -> None:
    d = deployment()
    d["props"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%"
    assert_violates([d, pdb()], "serving-rollout-safe", "serving-deployment", "maxUnavailable: 0")
    del d["props"]["spec"]["strategy"]  # the default is 25%
    assert_violates([d, pdb()], "serving-rollout-safe", "serving-deployment", "default is 25%")
    d["props"]["spec"]["strategy"] = {"type": "Recreate"}
    assert_violates([d, pdb()], "serving-rollout-safe", "serving-deployment", "maxUnavailable")
    d["props"]["spec"]["strategy"] = {"rollingUpdate": {"maxUnavailable": "0%"}}
    assert of_rule(check_resources([d, pdb()]), "serving-rollout-safe") == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"minReadySeconds": None}, ("minReadySeconds > 0",)),
        ({"minReadySeconds": 0}, ("minReadySeconds > 0",)),
        ({"progressDeadlineSeconds": None}, ("progressDeadlineSeconds",)),
        ({"progressDeadlineSeconds": 5}, ("above minReadySeconds",)),
        ({"revisionHistoryLimit": None}, ("revisionHistoryLimit >= 1",)),
        ({"revisionHistoryLimit": 0}, ("revisionHistoryLimit >= 1",)),
    ],
)
def test_serving_rollout_settings(change: dict[str, Any], words: tuple[str, ...]) -> None:
    d = deployment()
    for key, value in change.items():
        if value is None:
            del d["props"]["spec"][key]
        else:
            d["props"]["spec"][key] = value
    assert_violates([d], "serving-rollout-safe", "serving-deployment", *words)


@pytest.mark.parametrize(
    "pre_stop",
    [
        {"sleep": {"seconds": 10}},
        {"exec": {"command": ["/bin/sleep", "10"]}},
        {"exec": {"command": ["/bin/sh", "-c", "sleep 10"]}},
    ],
)
def test_pre_stop_forms_are_read(pre_stop: dict[str, Any]) -> None:
    d = deployment()
    pod_spec_of(d)["containers"][0]["lifecycle"] = {"preStop": pre_stop}
    assert of_rule(check_resources([d]), "serving-rollout-safe") == []
    pod_spec_of(d)["terminationGracePeriodSeconds"] = 20  # 10 s preStop + 10 s drain: nothing left
    assert_violates([d], "serving-rollout-safe", "serving-deployment", "terminationGracePeriodSeconds 20")


def test_pre_stop_drain_and_grace_period() -> None:
    d = deployment()
    c = pod_spec_of(d)["containers"][0]
    del c["lifecycle"]
    assert_violates([d], "serving-rollout-safe", "serving-deployment", "no preStop sleep")
    c["lifecycle"] = {"preStop": {"httpGet": {"path": "/drain", "port": 8080}}}  # duration unknown
    assert_violates([d], "serving-rollout-safe", "serving-deployment", "no preStop sleep")
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "25"]}}}
    del pod_spec_of(d)["terminationGracePeriodSeconds"]  # the default 30 s < 25 + 10
    assert_violates([d], "serving-rollout-safe", "serving-deployment", "terminationGracePeriodSeconds 30")
    c["env"] = [e for e in c["env"] if e["name"] != "MLOPS_DRAIN_SECONDS"]
    assert_violates([d], "serving-rollout-safe", "serving-deployment", "MLOPS_DRAIN_SECONDS")


def test_non_serving_deployments_have_no_rollout_requirements() -> None:
    d = deployment()
    for labels in (d["props"]["metadata"]["labels"], d["props"]["spec"]["template"]["metadata"]["labels"]):
        labels["app.kubernetes.io/component"] = "registry"
    del d["props"]["spec"]["strategy"], d["props"]["spec"]["minReadySeconds"]
    del pod_spec_of(d)["containers"][0]["lifecycle"]
    assert of_rule(check_resources([d]), "serving-rollout-safe") == []


# ---- topology-spread ----


def test_production_serving_spreads_over_nodes_or_zones() -> None:
    d = deployment("prod")
    spec = pod_spec_of(d)
    del spec["topologySpreadConstraints"]
    assert_violates([d], "topology-spread", "serving-deployment", "'prod'", "kubernetes.io/hostname")
    spec["topologySpreadConstraints"] = [  # spreads someone else's pods
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "labelSelector": {"matchLabels": {"a": "b"}},
        }
    ]
    assert_violates([d], "topology-spread", "serving-deployment", "selects its own pods")
    spec["topologySpreadConstraints"] = [  # over a key that is no failure domain
        {"maxSkew": 1, "topologyKey": "example.com/rack-colour", "labelSelector": SELECTOR}
    ]
    assert_violates([d], "topology-spread", "serving-deployment")
    spec["topologySpreadConstraints"][0]["topologyKey"] = "topology.kubernetes.io/zone"
    assert of_rule(check_resources([d]), "topology-spread") == []


def test_topology_spread_only_in_production_stacks() -> None:
    d = deployment("dev")
    del pod_spec_of(d)["topologySpreadConstraints"]
    assert of_rule(check_resources([d]), "topology-spread") == []
    assert_violates([d], "topology-spread", "serving-deployment", "'dev'", digest_required_stacks=["dev"])
    # The stack the engine names (from the URN) wins over the object's label.
    assert_violates([{**d, "stack": "prod"}], "topology-spread", "serving-deployment", "'prod'")


# ---- pod-disruption-budget (stack) ----


def test_serving_without_pdb_rejected() -> None:
    assert_violates([deployment()], "pod-disruption-budget", "serving-deployment", "PodDisruptionBudget")
    elsewhere = pdb()
    elsewhere["props"]["metadata"]["namespace"] = "other"
    found = of_rule(check_resources([deployment(), elsewhere]), "pod-disruption-budget")
    assert {(v.resource, "drain" in v.message, "selects no pod" in v.message) for v in found} == {
        ("serving-deployment", True, False),
        ("serving-pdb", False, True),
    }


def test_pdb_selector_semantics() -> None:
    expr = pdb()
    expr["props"]["spec"]["selector"] = {
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["serving"]}]
    }
    assert of_rule(check_resources([deployment(), expr]), "pod-disruption-budget") == []
    no_selector = pdb()
    del no_selector["props"]["spec"]["selector"]  # a null selector selects nothing
    found = of_rule(check_resources([deployment(), no_selector]), "pod-disruption-budget")
    assert sorted(v.resource for v in found) == ["serving-deployment", "serving-pdb"]
    assert "selector None" in next(v.message for v in found if v.resource == "serving-pdb")


def test_a_budget_that_selects_no_pod_is_stale() -> None:
    stale = pdb()
    stale["props"]["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "gone"}}
    assert_violates([stale], "pod-disruption-budget", "serving-pdb", "selects no pod", "gone")


def test_replicated_workloads_need_a_budget_too() -> None:
    d = deployment()
    for labels in (d["props"]["metadata"]["labels"], d["props"]["spec"]["template"]["metadata"]["labels"]):
        labels["app.kubernetes.io/component"] = "registry"
    d["props"]["spec"]["replicas"] = 1
    assert of_rule(check_resources([d]), "pod-disruption-budget") == []
    d["props"]["spec"]["replicas"] = 2
    assert_violates([d], "pod-disruption-budget", "serving-deployment", "runs 2 replicas")
    # An autoscaler's minimum counts: replicas 1, but never fewer than 3 once it acts.
    d["props"]["spec"]["replicas"] = 1
    d["props"]["metadata"]["name"] = "mlflow"
    hpa = {
        "type": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "name": "mlflow-autoscaler",
        "props": {
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"namespace": "ml"},
            "spec": {"minReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "mlflow"}},
        },
    }
    assert_violates([d, hpa], "pod-disruption-budget", "serving-deployment", "runs 3 replicas")


# ---- network-policy-coverage (stack) ----


def test_every_pod_needs_a_network_policy() -> None:
    assert_violates(
        [deployment()], "network-policy-coverage", "serving-deployment", "no NetworkPolicy", "'ml'"
    )
    elsewhere = network_policy()
    elsewhere["props"]["metadata"]["namespace"] = "other"  # an empty selector: namespace-wide, never stale
    assert_violates([deployment(), elsewhere], "network-policy-coverage", "serving-deployment")
    assert of_rule(check_resources([deployment(), network_policy()]), "network-policy-coverage") == []
    assert of_rule(check_resources([network_policy()]), "network-policy-coverage") == []
    only_serving = network_policy(selector=SELECTOR)
    assert_violates([deployment(), job(), only_serving], "network-policy-coverage", "training-job")


def test_a_network_policy_that_selects_no_pod_is_stale() -> None:
    not_serving = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["serving"]}
        ]
    }
    assert (
        of_rule(check_resources([job(), network_policy(selector=not_serving)]), "network-policy-coverage")
        == []
    )
    stale = network_policy(selector={"matchLabels": {"app.kubernetes.io/name": "gone"}})
    assert_violates([stale], "network-policy-coverage", "default-deny", "selects no pod", "gone")
    found = of_rule(check_resources([deployment(), stale]), "network-policy-coverage")
    assert sorted(v.resource for v in found) == ["default-deny", "serving-deployment"]


# ---- service-account-token (stack) ----


def role_binding(kind: str = "RoleBinding", **subject: str) -> dict[str, Any]:
    return {
        "type": f"kubernetes:rbac.authorization.k8s.io/v1:{kind}",
        "name": "scraper-binding",
        "props": {
            "kind": kind,
            "metadata": {"namespace": "ml"} if kind == "RoleBinding" else {},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods-reader"},
            "subjects": [{"kind": "ServiceAccount", **subject}],
        },
    }


def test_no_token_mounted_unless_the_account_is_bound() -> None:
    d = deployment()
    pod = pod_spec_of(d)
    del pod["automountServiceAccountToken"]  # Kubernetes' default: mounted
    assert_violates(
        [d], "service-account-token", "serving-deployment", "'default'", "automountServiceAccountToken"
    )
    pod["serviceAccountName"] = "scraper"
    account: dict[str, Any] = {
        "type": "kubernetes:core/v1:ServiceAccount",
        "name": "scraper-account",
        "props": {"kind": "ServiceAccount", "metadata": {"name": "scraper", "namespace": "ml"}},
    }
    assert_violates([d, account], "service-account-token", "serving-deployment", "'scraper'")
    account["props"]["automountServiceAccountToken"] = False  # the account's own setting counts
    assert of_rule(check_resources([d, account]), "service-account-token") == []
    pod["automountServiceAccountToken"] = True  # the pod's setting wins over the account's
    assert_violates([d, account], "service-account-token", "serving-deployment")
    for binding in (
        role_binding(name="scraper"),  # subject namespace: the binding's
        role_binding(name="scraper", namespace="ml"),
        role_binding("ClusterRoleBinding", name="scraper", namespace="ml"),
    ):
        assert of_rule(check_resources([d, account, binding]), "service-account-token") == []
    other_namespace = role_binding(name="scraper", namespace="elsewhere")
    assert_violates([d, account, other_namespace], "service-account-token", "serving-deployment")


# ---- 7. release-gates-passed ----# ---- 7. release-gates-passed ----


def test_prod_serving_needs_gates_annotation() -> None:
    d = deployment("prod")
    d["props"]["spec"]["template"]["metadata"]["annotations"]["mlops.dev/gates"] = "failed"
    assert_violates(
        [d, pdb()], "release-gates-passed", "serving-deployment", "mlops.dev/gates", "'failed'", "'prod'"
    )
    del d["props"]["spec"]["template"]["metadata"]["annotations"]
    assert_violates([d, pdb()], "release-gates-passed", "serving-deployment", "mlops.dev/gates: passed")
    d["props"]["metadata"]["annotations"] = {"mlops.dev/gates": "passed"}  # Deployment metadata counts too
    assert of_rule(check_resources([d, pdb()]), "release-gates-passed") == []


def test_gates_annotation_only_required_in_digest_stacks() -> None:
    d = deployment("dev")
    del d["props"]["spec"]["template"]["metadata"]["annotations"]
    assert of_rule(check_resources([d, pdb("dev")]), "release-gates-passed") == []
    assert_violates(
        [d, pdb("dev")], "release-gates-passed", "serving-deployment", "'dev'", digest_required_stacks=["dev"]
    )
    del (
        d["props"]["metadata"]["labels"]["mlops.dev/stack"],
        d["props"]["spec"]["template"]["metadata"]["labels"]["mlops.dev/stack"],
    )
    assert of_rule(check_resources([d, pdb("dev")]), "release-gates-passed") == []  # no stack label: not prod


# ---- 8. artifact-bucket-protected ----


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"versioning": False}, "versioning"),
        ({"block_public_access": False}, "block_public_access"),
        ({"encryption": "none"}, "encryption 'none'"),
        ({"tls_only": False}, "tls_only False"),
        ({"tls_only": False, "endpoint_url": "https://minio.example:9000"}, "TLS-only"),
    ],
)
def test_bucket_must_be_versioned_private_encrypted_and_tls_only(
    overrides: dict[str, Any], word: str
) -> None:
    assert_violates(
        [bucket(**overrides)], "artifact-bucket-protected", "registry-artifacts", word, "artifact bucket"
    )


def test_bucket_missing_properties_and_other_dynamic_resources() -> None:
    b = bucket()
    for key in ("versioning", "block_public_access", "encryption", "tls_only"):
        del b["props"][key]
    assert_violates(
        [b],
        "artifact-bucket-protected",
        "registry-artifacts",
        "versioning None",
        "block_public_access None",
        "encryption None",
        "tls_only None",
    )
    other = {"type": DYNAMIC, "name": "mlflow-model", "props": {"mlops_kind": "registered-model"}}
    assert check_resources([other]) == []


def test_a_plain_http_store_is_allowed_outside_production_only() -> None:
    local = bucket(tls_only=False, endpoint_url="http://localhost:9000")
    assert of_rule(check_resources([{**local, "stack": "dev"}]), "artifact-bucket-protected") == []
    assert_violates(
        [{**local, "stack": "prod"}],
        "artifact-bucket-protected",
        "registry-artifacts",
        "plain HTTP",
        "'prod'",
    )


# ---- no-bare-pods, no-default-namespace, recommended-labels ----


def test_bare_pods_rejected() -> None:
    bare = {
        "type": "kubernetes:core/v1:Pod",
        "name": "debug",
        "props": {
            "kind": "Pod",
            "metadata": {"namespace": "ml", "labels": _labels("prod")},
            "spec": _pod_spec(),
        },
    }
    assert_violates([bare], "no-bare-pods", "debug", "bare Pod", "Deployment")
    assert of_rule(check_resources(render()), "no-bare-pods") == []


def test_nothing_in_the_default_namespace() -> None:
    d = deployment()
    d["props"]["metadata"]["namespace"] = "default"
    assert_violates([d], "no-default-namespace", "serving-deployment", "`default` namespace")
    del d["props"]["metadata"]["namespace"]
    assert_violates([d], "no-default-namespace", "serving-deployment", "no metadata.namespace")
    namespace = {
        "type": "kubernetes:core/v1:Namespace",
        "name": "ns",
        "props": {"kind": "Namespace", "metadata": {"name": "ml", "labels": _labels("prod")}},
    }
    provider = {"type": "pulumi:providers:kubernetes", "name": "k8s", "props": {"namespace": "default"}}
    group = {"type": "kubernetes:yaml/v2:ConfigGroup", "name": "extras", "props": {"files": ["x.yaml"]}}
    assert check_resources([namespace, provider, group]) == []  # cluster-scoped; no Kubernetes objects


def test_recommended_labels_on_objects_and_pod_templates() -> None:
    s = service()
    del s["props"]["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert_violates([s], "recommended-labels", "serving-service", "app.kubernetes.io/managed-by")
    del s["props"]["metadata"]["labels"]
    assert_violates([s], "recommended-labels", "serving-service", "app.kubernetes.io/name", "mlops.dev/stack")
    d = deployment()
    del d["props"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"]
    assert_violates(
        [d], "recommended-labels", "serving-deployment", "pod template labels app.kubernetes.io/part-of"
    )
    assert of_rule(check_resources([bucket()]), "recommended-labels") == []


# ---- stateful-resources-protected ----


def claim(**extra: Any) -> dict[str, Any]:
    return {
        "type": "kubernetes:core/v1:PersistentVolumeClaim",
        "name": "registry-data",
        "props": {
            "kind": "PersistentVolumeClaim",
            "metadata": {"namespace": "ml", "labels": _labels("prod", "registry")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        **extra,
    }


def test_production_state_is_protected() -> None:
    assert_violates(
        [claim(protect=False)], "stateful-resources-protected", "registry-data", "'prod'", "protect"
    )
    assert check_resources([claim(protect=True)]) == []
    assert check_resources([claim()]) == []  # options unknown (a manifest read from disk): not judged
    dev_claim = claim(protect=False)
    dev_claim["props"]["metadata"]["labels"]["mlops.dev/stack"] = "dev"
    assert check_resources([dev_claim]) == []
    assert_violates(
        [dev_claim], "stateful-resources-protected", "registry-data", digest_required_stacks=["dev"]
    )
    # The bucket has no labels: its stack comes from the engine (URN) or the render.
    assert_violates(
        [{**bucket(), "stack": "prod", "protect": False}],
        "stateful-resources-protected",
        "registry-artifacts",
    )
    assert (
        of_rule(
            check_resources([{**bucket(), "stack": "dev", "protect": False}]), "stateful-resources-protected"
        )
        == []
    )


def test_stack_of_urn() -> None:
    assert stack_of_urn("urn:pulumi:prod::mlops::kubernetes:core/v1:Service::s") == "prod"
    assert (
        stack_of_urn("urn:pulumi:dev::mlops::mlops:index:ModelServing$kubernetes:apps/v1:Deployment::d")
        == "dev"
    )
    assert stack_of_urn(None) is None and stack_of_urn("serving") is None


# ---- the pack: policies, and the validators under pulumi_policy's own arg types ----


@pytest.fixture(scope="module")
def pack() -> dict[str, Any]:
    # run_name != "__main__": the PolicyPack (which starts a gRPC server and blocks) is not built.
    return runpy.run_path(str(REPO / "policy" / "__main__.py"), run_name="policy_pack_under_test")


def test_policies_unique_kebab_case_mandatory(pack: dict[str, Any]) -> None:
    policies = pack["build_policies"]()
    names = [p.name for p in policies]
    assert len(names) == len(set(names)) == 16
    for p in policies:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name), p.name
        assert p.enforcement_level == EnforcementLevel.MANDATORY
        assert p.description.endswith(".") and p.description.count(". ") == 0, p.description
    kinds = {p.name: type(p) for p in policies}
    stack_policies = {n for n, k in kinds.items() if k is StackValidationPolicy}
    assert stack_policies == {"pod-disruption-budget", "network-policy-coverage", "service-account-token"}
    assert sum(k is ResourceValidationPolicy for k in kinds.values()) == 13
    schemas = {p.name: p.config_schema.properties for p in policies if p.config_schema}
    assert schemas["service-type-allowed"]["allowed_service_types"]["default"] == []
    assert schemas["container-security-context"]["min_run_as_user"]["default"] == 10000
    production = ("image-pinned", "release-gates-passed", "artifact-bucket-protected", "topology-spread")
    for name in (*production, "stateful-resources-protected"):
        assert schemas[name]["digest_required_stacks"]["default"] == ["prod"], name


def _into(sink: list[str]) -> Any:
    def report_violation(message: str, urn: str | None = None) -> None:
        sink.append(message)

    return report_violation


def _pairs_into(sink: list[tuple[str, str | None]]) -> Any:
    def report_violation(message: str, urn: str | None = None) -> None:
        sink.append((message, urn))

    return report_violation


def _options(protect: bool) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _resource_args(
    resource: dict[str, Any], config: dict[str, Any] | None = None, protect: bool = True
) -> ResourceValidationArgs:
    opts = _options(protect)
    return ResourceValidationArgs(
        resource["type"],
        unknown_checking_proxy(copy.deepcopy(resource["props"])),
        f"urn:pulumi:prod::mlops::{resource['type']}::{resource['name']}",
        resource["name"],
        opts,
        None,
        config,
    )


def test_resource_validators_report_through_the_sdk(pack: dict[str, Any]) -> None:
    policies = {p.name: p for p in pack["build_policies"]()}
    reported: list[str] = []
    bad = service("LoadBalancer")
    policies["service-type-allowed"].validate(_resource_args(bad), _into(reported))
    assert len(reported) == 1 and "[service-type-allowed] Service 'serving-service'" in reported[0]
    reported.clear()
    config = {"allowed_service_types": ["LoadBalancer"]}
    policies["service-type-allowed"].validate(_resource_args(bad, config), _into(reported))
    assert reported == []
    for policy in policies.values():
        if isinstance(policy, ResourceValidationPolicy):
            for resource in render():
                policy.validate(_resource_args(resource), _into(reported))
    assert reported == []


def test_the_validators_see_the_protect_option_and_the_stack_of_the_urn(pack: dict[str, Any]) -> None:
    policy = next(p for p in pack["build_policies"]() if p.name == "stateful-resources-protected")
    reported: list[str] = []
    policy.validate(_resource_args(bucket(), protect=False), _into(reported))
    assert (
        len(reported) == 1
        and "'prod'" in reported[0]
        and "artifact bucket 'registry-artifacts'" in reported[0]
    )
    policy.validate(_resource_args(bucket(), protect=True), _into(reported))
    dev = _resource_args(bucket(), protect=False)
    dev.urn = dev.urn.replace("urn:pulumi:prod::", "urn:pulumi:dev::")
    policy.validate(dev, _into(reported))
    assert len(reported) == 1


def test_unknown_values_surface_as_unknown_value_error(pack: dict[str, Any]) -> None:
    # During preview the engine marks not-yet-known values; the SDK turns this error into an
    # advisory "can't run during preview" instead of a false pass or a crash.
    d = deployment()
    d["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = UNKNOWN_STRING_VALUE
    policy = next(p for p in pack["build_policies"]() if p.name == "image-pinned")
    with pytest.raises(UnknownValueError):
        policy.validate(_resource_args(d), _into([]))


def test_stack_validator_reports_with_urn(pack: dict[str, Any]) -> None:
    resources = [
        PolicyResource(
            r["type"],
            unknown_checking_proxy(r["props"]),
            f"urn:pulumi:prod::mlops::{r['type']}::{r['name']}",
            r["name"],
            _options(True),
            None,
            None,
            [],
            {},
        )
        for r in [deployment(), service(), bucket()]
    ]
    reported: list[tuple[str, str | None]] = []
    policy = next(p for p in pack["build_policies"]() if p.name == "pod-disruption-budget")
    policy.validate(StackValidationArgs(resources, {}), _pairs_into(reported))
    assert reported == [(reported[0][0], f"urn:pulumi:prod::mlops::{DEPLOYMENT}::serving-deployment")]
    assert "[pod-disruption-budget] Deployment 'serving-deployment'" in reported[0][0]


def test_pulumi_policy_yaml_layout() -> None:
    manifest = yaml.safe_load((REPO / "policy" / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    venv = (REPO / "policy" / manifest["runtime"]["options"]["virtualenv"]).resolve()
    assert (venv / "bin" / "python").exists(), venv
    assert (REPO / "policy" / "__main__.py").exists()


def test_pack_config_files_flatten_to_what_the_rules_take() -> None:
    from policy.rules import flatten_pack_config

    raw = {
        "all": "mandatory",
        "service-type-allowed": {"enforcementLevel": "mandatory", "allowed_service_types": ["NodePort"]},
        "image-pinned": {"digest_required_stacks": ["prod", "staging"]},
        "release-gates-passed": {"digest_required_stacks": ["prod", "staging"]},
    }
    assert flatten_pack_config(raw) == {
        "allowed_service_types": ["NodePort"],
        "digest_required_stacks": ["prod", "staging"],
    }
    with pytest.raises(ValueError, match="digest_required_stacks differs between policies"):
        flatten_pack_config({**raw, "release-gates-passed": {"digest_required_stacks": ["prod"]}})
    with pytest.raises(ValueError, match="unknown policy config keys"):
        flatten_pack_config({"image-pinned": {"digest_stacks": ["prod"]}})


def test_the_dev_stack_config_file_allows_its_nodeport_and_prod_has_none() -> None:
    from policy.rules import stack_pack_config

    assert stack_pack_config("dev") == {"allowed_service_types": ["NodePort"]}
    assert stack_pack_config("prod") == {}
    nodeport = service("NodePort")
    assert check_resources([nodeport], stack_pack_config("dev")) == []
    refused = check_resources([nodeport], stack_pack_config("prod"))
    assert [v.rule for v in refused] == ["service-type-allowed"]
