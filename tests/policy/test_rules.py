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

from policy.rules import PolicyConfig, Violation, check_resources

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "a" * 64
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
JOB = "kubernetes:batch/v1:Job"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
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
        "env": [
            {"name": "MODEL_URI", "value": "s3://artifacts/model/abc123/"},
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
        "containers": [_container()],
    }


def _labels(stack: str, component: str = "serving") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "iris",
        "app.kubernetes.io/component": component,
        "mlops.dev/stack": stack,
    }


def deployment(stack: str = "prod") -> dict[str, Any]:
    return {
        "type": DEPLOYMENT,
        "name": "serving-deployment",
        "props": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"labels": _labels(stack), "namespace": "ml"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "iris"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": _labels(stack), "annotations": {"mlops.dev/gates": "passed"}},
                    "spec": _pod_spec(),
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
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "iris"}}},
        },
    }


def job(stack: str = "dev") -> dict[str, Any]:
    container = _container("train", "registry.local/training:abc123")
    del container["readinessProbe"], container["livenessProbe"]
    return {
        "type": JOB,
        "name": "training-job",
        "props": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"labels": _labels(stack, "training")},
            "spec": {
                "template": {"spec": {**_pod_spec(), "containers": [container], "restartPolicy": "Never"}}
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
            "metadata": {"labels": _labels("prod")},
            "spec": spec,
        },
    }


def bucket(**overrides: Any) -> dict[str, Any]:
    props = {
        "bucket_name": "mlops-artifacts",
        "mlops_kind": "s3-bucket",
        "versioning": True,
        "block_public_access": True,
    }
    props.update(overrides)
    return {"type": DYNAMIC, "name": "registry-artifacts", "props": props}


def render(stack: str = "prod") -> list[dict[str, Any]]:
    return [deployment(stack), pdb(stack), job(), service(), bucket()]


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
    assert_violates([d, pdb()], "container-security-context", "serving-deployment", "runAsNonRoot", "seccomp")
    messages = " ".join(v.message for v in check_resources([d, pdb()]))
    assert "init container 'fetch'" in messages and "container 'server'" in messages

    d = deployment()
    d["props"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    assert_violates([d, pdb()], "container-security-context", "serving-deployment", "runAsUser is 0")


def test_security_context_container_level_overrides_pod_level() -> None:
    d = deployment()
    spec = d["props"]["spec"]["template"]["spec"]
    spec["securityContext"] = {}  # everything set on the container instead
    spec["containers"][0]["securityContext"].update(
        runAsNonRoot=True, seccompProfile={"type": "RuntimeDefault"}
    )
    assert of_rule(check_resources([d, pdb()]), "container-security-context") == []
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = False  # overrides the pod's true
    spec["securityContext"] = {"runAsNonRoot": True}
    assert_violates([d, pdb()], "container-security-context", "serving-deployment", "runAsNonRoot")


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
    assert PolicyConfig.from_mapping(None) == PolicyConfig(frozenset(), frozenset({"prod"}))


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


# ---- 6. serving-rollout-safe (stack) ----


def test_serving_without_pdb_rejected() -> None:
    assert_violates([deployment()], "serving-rollout-safe", "serving-deployment", "PodDisruptionBudget")
    other = pdb()
    other["props"]["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "other"}}
    assert_violates(
        [deployment(), other], "serving-rollout-safe", "serving-deployment", "PodDisruptionBudget"
    )
    elsewhere = pdb()
    elsewhere["props"]["metadata"]["namespace"] = "other"
    assert_violates(
        [deployment(), elsewhere], "serving-rollout-safe", "serving-deployment", "PodDisruptionBudget"
    )


def test_pdb_selector_semantics() -> None:
    expr = pdb()
    expr["props"]["spec"]["selector"] = {
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["serving"]}]
    }
    assert of_rule(check_resources([deployment(), expr]), "serving-rollout-safe") == []
    no_selector = pdb()
    del no_selector["props"]["spec"]["selector"]  # a null selector selects nothing
    assert_violates(
        [deployment(), no_selector], "serving-rollout-safe", "serving-deployment", "PodDisruptionBudget"
    )


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


def test_non_serving_deployments_need_no_pdb() -> None:
    d = deployment()
    d["props"]["metadata"]["labels"]["app.kubernetes.io/component"] = "registry"
    d["props"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "registry"
    del d["props"]["spec"]["strategy"]
    assert of_rule(check_resources([d]), "serving-rollout-safe") == []


# ---- 7. release-gates-passed ----


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
    [({"versioning": False}, "versioning"), ({"block_public_access": False}, "block_public_access")],
)
def test_bucket_must_be_versioned_and_private(overrides: dict[str, Any], word: str) -> None:
    assert_violates(
        [bucket(**overrides)], "artifact-bucket-protected", "registry-artifacts", word, "artifact bucket"
    )


def test_bucket_missing_properties_and_other_dynamic_resources() -> None:
    b = bucket()
    del b["props"]["versioning"], b["props"]["block_public_access"]
    assert_violates(
        [b], "artifact-bucket-protected", "registry-artifacts", "versioning None", "block_public_access None"
    )
    other = {"type": DYNAMIC, "name": "mlflow-model", "props": {"mlops_kind": "registered-model"}}
    assert check_resources([other]) == []


# ---- the pack: policies, and the validators under pulumi_policy's own arg types ----


@pytest.fixture(scope="module")
def pack() -> dict[str, Any]:
    # run_name != "__main__": the PolicyPack (which starts a gRPC server and blocks) is not built.
    return runpy.run_path(str(REPO / "policy" / "__main__.py"), run_name="policy_pack_under_test")


def test_policies_unique_kebab_case_mandatory(pack: dict[str, Any]) -> None:
    policies = pack["build_policies"]()
    names = [p.name for p in policies]
    assert len(names) == len(set(names)) == 8
    for p in policies:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name), p.name
        assert p.enforcement_level == EnforcementLevel.MANDATORY
        assert p.description.endswith(".") and p.description.count(". ") == 0, p.description
    kinds = {p.name: type(p) for p in policies}
    assert kinds["serving-rollout-safe"] is StackValidationPolicy
    assert sum(k is ResourceValidationPolicy for k in kinds.values()) == 7
    schemas = {p.name: p.config_schema.properties for p in policies if p.config_schema}
    assert schemas["service-type-allowed"]["allowed_service_types"]["default"] == []
    assert schemas["image-pinned"]["digest_required_stacks"]["default"] == ["prod"]
    assert "digest_required_stacks" in schemas["release-gates-passed"]


def _into(sink: list[str]) -> Any:
    def report_violation(message: str, urn: str | None = None) -> None:
        sink.append(message)

    return report_violation


def _pairs_into(sink: list[tuple[str, str | None]]) -> Any:
    def report_violation(message: str, urn: str | None = None) -> None:
        sink.append((message, urn))

    return report_violation


def _resource_args(resource: dict[str, Any], config: dict[str, Any] | None = None) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
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


def test_unknown_values_surface_as_unknown_value_error(pack: dict[str, Any]) -> None:
    # During preview the engine marks not-yet-known values; the SDK turns this error into an
    # advisory "can't run during preview" instead of a false pass or a crash.
    d = deployment()
    d["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = UNKNOWN_STRING_VALUE
    policy = next(p for p in pack["build_policies"]() if p.name == "image-pinned")
    with pytest.raises(UnknownValueError):
        policy.validate(_resource_args(d), _into([]))


def test_stack_validator_reports_with_urn(pack: dict[str, Any]) -> None:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    resources = [
        PolicyResource(
            r["type"],
            unknown_checking_proxy(r["props"]),
            f"urn:{r['name']}",
            r["name"],
            opts,
            None,
            None,
            [],
            {},
        )
        for r in [deployment(), bucket()]
    ]
    reported: list[tuple[str, str | None]] = []
    policy = next(p for p in pack["build_policies"]() if p.name == "serving-rollout-safe")
    policy.validate(StackValidationArgs(resources, {}), _pairs_into(reported))
    assert reported and all(urn == "urn:serving-deployment" for _, urn in reported)
    assert "[serving-rollout-safe] Deployment 'serving-deployment'" in reported[0][0]


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
    nodeport = {
        "type": "kubernetes:core/v1:Service",
        "name": "registry",
        "props": {"metadata": {"name": "registry"}, "spec": {"type": "NodePort"}},
    }
    assert check_resources([nodeport], stack_pack_config("dev")) == []
    refused = check_resources([nodeport], stack_pack_config("prod"))
    assert [v.rule for v in refused] == ["service-type-allowed"]
