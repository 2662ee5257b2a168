"""RetrainTrigger under Pulumi's mocks: its objects, the strict schemas, the policy pack, secrets."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pulumi
import pytest

from components.common import ImageSource, PushTarget
from components.network import DNS_EGRESS
from components.retrain_trigger import ContainerResources, RetrainTrigger, RetrainTriggerArgs
from infra.render import MASK
from policy.rules import check_resources

TOKEN = "mlops:index:RetrainTrigger"
IMAGE = ImageSource(ref="ghcr.io/acme/serve@sha256:" + "c" * 64)
GITHUB_TOKEN = "github_pat_secret_value_1234567890"
WEBHOOK_TOKEN = "webhook-secret-value-1234567890abcdef"


def _args(**overrides: object) -> RetrainTriggerArgs:
    values: dict[str, object] = {
        "namespace": "monitoring",
        "image": IMAGE,
        "stack": "dev",
        "repository": "acme/mlops",
        "github_token": GITHUB_TOKEN,
        "webhook_token": WEBHOOK_TOKEN,
    }
    values.update(overrides)
    return RetrainTriggerArgs(**values)  # type: ignore[arg-type]


def _inputs(mocks: Any, kind: str, name: str) -> dict[str, Any]:
    inputs: dict[str, Any] = mocks.one(kind, name).inputs
    return inputs


def test_tree_objects_and_outputs(pulumi_mocks, unique) -> None:
    name = unique("retrain")
    trigger = pulumi_mocks.build(lambda: RetrainTrigger(name, _args()))
    assert trigger.pulumi_resource_type == TOKEN
    assert [(c.type, c.name) for c in pulumi_mocks.children_of(TOKEN, name)] == sorted(
        [
            ("kubernetes:apps/v1:Deployment", f"{name}-deployment"),
            ("kubernetes:core/v1:Secret", f"{name}-github-token"),
            ("kubernetes:core/v1:Secret", f"{name}-webhook-token"),
            ("kubernetes:core/v1:Service", f"{name}-service"),
            ("kubernetes:core/v1:ServiceAccount", f"{name}-account"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-network-policy"),
        ]
    )
    deployment = _inputs(pulumi_mocks, "kubernetes:apps/v1:Deployment", f"{name}-deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == f"{name}-account"
    (container,) = pod["containers"]
    assert container["image"] == IMAGE.ref
    assert container["command"] == ["python", "-m", "model.retrain_trigger"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": "96Mi"},
        "limits": {"cpu": "250m", "memory": "192Mi"},
    }
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MLOPS_RETRAIN_REPOSITORY"] == "acme/mlops"
    assert env["MLOPS_RETRAIN_GITHUB_API_URL"] == "https://api.github.com"
    assert env["MLOPS_RETRAIN_STACK"] == "dev"
    assert env["MLOPS_RETRAIN_ALERT_NAMES"] == "MLOpsModelDrift"
    assert env["MLOPS_RETRAIN_MIN_INTERVAL_SECONDS"] == "21600"
    assert env["MLOPS_RETRAIN_PORT"] == "8080"
    # Each token from its own Secret; the GitHub token never sits in the Secret Alertmanager mounts.
    assert env["MLOPS_RETRAIN_GITHUB_TOKEN"] == {
        "secretKeyRef": {"name": f"{name}-github-token", "key": "token"}
    }
    assert env["MLOPS_RETRAIN_WEBHOOK_TOKEN"] == {
        "secretKeyRef": {"name": f"{name}-webhook-token", "key": "token"}
    }

    service = _inputs(pulumi_mocks, "kubernetes:core/v1:Service", f"{name}-service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()

    out = pulumi_mocks.value(
        pulumi.Output.all(trigger.url, trigger.webhook_token_secret_name, trigger.deployment_name)
    )
    assert out == [
        "http://retrain-trigger.monitoring.svc.cluster.local:80/alertmanager",
        f"{name}-webhook-token",
        "retrain-trigger",
    ]


def test_network_policy_admits_only_alertmanager_and_lets_out_dns_and_https(pulumi_mocks, unique) -> None:
    name = unique("retrain")
    pulumi_mocks.build(lambda: RetrainTrigger(name, _args()))
    policy = _inputs(pulumi_mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-network-policy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "retrain-trigger",
        "app.kubernetes.io/component": "monitoring",
    }
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }
    ]
    assert spec["egress"] == [DNS_EGRESS, {"ports": [{"port": 443, "protocol": "TCP"}]}]

    # GitHub Enterprise on its own port.
    other = unique("retrain")
    pulumi_mocks.build(
        lambda: RetrainTrigger(other, _args(github_api_url="https://ghe.example.com:8443/api/v3"))
    )
    policy = _inputs(pulumi_mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{other}-network-policy")
    assert policy["spec"]["egress"][1] == {"ports": [{"port": 8443, "protocol": "TCP"}]}
    assert policy["spec"]["ingress"] == spec["ingress"]


def test_tokens_are_secrets_and_never_rendered(pulumi_mocks, unique) -> None:
    name = unique("retrain")
    trigger = pulumi_mocks.build(lambda: RetrainTrigger(name, _args()))
    for role in ("github-token", "webhook-token"):
        secret = _inputs(pulumi_mocks, "kubernetes:core/v1:Secret", f"{name}-{role}")
        assert secret["type"] == "Opaque"
        assert secret["stringData"] == {"token": MASK}
    rendered = json.dumps([r.inputs for r in pulumi_mocks.mocks.resources])
    assert GITHUB_TOKEN not in rendered and WEBHOOK_TOKEN not in rendered
    # The outputs Alertmanager needs are names, not the token.
    assert pulumi_mocks.value(trigger.webhook_token_secret_name) == f"{name}-webhook-token"


def test_every_object_passes_the_strict_schemas_and_the_policy_pack(pulumi_mocks, unique) -> None:
    name = unique("retrain")
    pulumi_mocks.build(
        lambda: RetrainTrigger(
            name,
            _args(
                stack="prod",
                image_pull_secret_name="pull",
                resources=ContainerResources(cpu_request="50m", memory_limit="256Mi"),
            ),
        )
    )
    mine = [r for r in pulumi_mocks.mocks.resources if r.parent == f"{TOKEN}::{name}"]
    objects = [r.inputs for r in mine if r.type.startswith("kubernetes:")]
    assert len(objects) == 6
    version = kubernetes_validate.latest_version()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlops"
        assert obj["metadata"]["labels"]["mlops.dev/stack"] == "prod"
    policy_view = [{"type": r.type, "name": r.name, "props": r.inputs} for r in mine]
    assert check_resources(policy_view, {"digest_required_stacks": ["prod"]}) == []


def test_a_built_image_is_pushed_and_deployed_by_digest(pulumi_mocks, unique) -> None:
    name = unique("retrain")
    image = ImageSource(dockerfile="images/Dockerfile.serve", repository="mlops-serve", tag="t1")
    trigger = pulumi_mocks.build(
        lambda: RetrainTrigger(name, _args(image=image, push_target=PushTarget(server="localhost:30500")))
    )
    assert pulumi_mocks.one("docker:index/image:Image", f"{name}-image")
    assert pulumi_mocks.value(trigger.image).startswith("localhost:30500/mlops-serve@sha256:")


def test_another_components_image_is_deployed_without_a_build(pulumi_mocks, unique) -> None:
    """The stack hands the trigger ModelServing.image (an Output): one build serves both."""
    name = unique("retrain")
    served = "localhost:30500/mlops-serve@sha256:" + "d" * 64
    trigger = pulumi_mocks.build(
        lambda: RetrainTrigger(name, _args(image=ImageSource(ref=pulumi.Output.from_input(served))))
    )
    assert not [r for r in pulumi_mocks.mocks.resources if r.type == "docker:index/image:Image"]
    deployment = _inputs(pulumi_mocks, "kubernetes:apps/v1:Deployment", f"{name}-deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == served
    assert pulumi_mocks.value(trigger.image) == served


def test_a_trigger_without_a_namespace_is_refused(pulumi_mocks, unique) -> None:
    with pytest.raises(ValueError, match=r"^namespace is required: Alertmanager's namespace"):
        pulumi_mocks.build(lambda: RetrainTrigger(unique("retrain"), _args(namespace=None)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"repository": "acme"}, "repository must be owner/name, got 'acme'"),
        ({"repository": "acme/mlops/x"}, "repository must be owner/name"),
        ({"stack": "Dev"}, "stack must be a stack name"),
        ({"github_api_url": "http://api.github.com"}, "github_api_url must be https://HOST[/path]"),
        ({"alert_names": ()}, "alert_names must be one or more Prometheus alert names"),
        ({"alert_names": ("Model Drift",)}, "alert_names must be one or more Prometheus alert names"),
        ({"min_interval_seconds": -1}, "min_interval_seconds must be >= 0, got -1"),
        (
            {"image": ImageSource(dockerfile="images/Dockerfile.serve", repository="s")},
            "push_target is required",
        ),
    ],
)
def test_invalid_args_name_the_argument(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        _args(**overrides)
    assert message in str(err.value)


def test_invalid_resources_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"resources.memory_limit must be a Kubernetes quantity"):
        ContainerResources(memory_limit="lots")
