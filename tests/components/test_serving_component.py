"""ModelServing under Pulumi's mocks: rollout safety, the objects around it, the canary split."""

from __future__ import annotations

import kubernetes_validate
import pulumi
import pytest

from components.common import ImageSource
from components.rollout import CONTROLLER_SLACK_SECONDS, probe_budget_seconds
from components.serving import (
    MAX_WORKERS,
    READY_WITHIN_SECONDS,
    ModelServing,
    ModelServingArgs,
    ServedRelease,
    ServiceType,
    split_replicas,
)
from infra.render import RenderResult
from tests.components.netpol import Address, Cluster

TOKEN = "mlops:index:ModelServing"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
IMAGE = ImageSource(ref="ghcr.io/acme/serve@sha256:" + "c" * 64)
STABLE = ServedRelease("aaaaaaaaaaaa", "s3://b/m/aaaaaaaaaaaa", "1" * 64, "3", "passed")
CANDIDATE = ServedRelease("bbbbbbbbbbbb", "s3://b/m/bbbbbbbbbbbb", "2" * 64, "4", "passed")


def _args(**overrides: object) -> ModelServingArgs:
    values: dict[str, object] = {
        "stack": "prod",
        "namespace": "ns",
        "model_name": "m",
        "release": STABLE,
        "image": IMAGE,
        "s3_secret_name": "s3",
        "replicas": 3,
        "max_replicas": 6,
        "topology_spread": True,
    }
    values.update(overrides)
    return ModelServingArgs(**values)  # type: ignore[arg-type]


def test_serving_tree_rollout_and_outputs(pulumi_mocks, unique) -> None:
    name = unique("serve")
    serving = pulumi_mocks.build(lambda: ModelServing(name, _args()))
    assert serving.pulumi_resource_type == TOKEN
    assert [(c.type, c.name) for c in pulumi_mocks.children_of(TOKEN, name)] == sorted(
        [
            ("kubernetes:apps/v1:Deployment", f"{name}-deployment"),
            ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", f"{name}-autoscaler"),
            ("kubernetes:core/v1:Service", f"{name}-service"),
            ("kubernetes:core/v1:ServiceAccount", f"{name}-account"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-network-policy"),
            ("kubernetes:policy/v1:PodDisruptionBudget", f"{name}-disruption-budget"),
        ]
    )
    deployment = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-deployment").inputs
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "mlops.dev/release" not in spec["selector"]["matchLabels"]  # selectors are immutable
    template = spec["template"]
    assert template["metadata"]["labels"]["mlops.dev/release"] == "aaaaaaaaaaaa"
    assert deployment["metadata"]["labels"]["mlops.dev/release"] == "aaaaaaaaaaaa"
    for notes in (template["metadata"]["annotations"], deployment["metadata"]["annotations"]):
        assert notes["mlops.dev/model-uri"] == "s3://b/m/aaaaaaaaaaaa"
        assert notes["mlops.dev/gates"] == "passed"
        assert notes["mlops.dev/model-version"] == "3"
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == f"{name}-account"
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "model.server"]
    assert container["image"] == IMAGE.ref
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] > 10 + 30  # drain + longest request
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MLOPS_MODEL_URI"] == "s3://b/m/aaaaaaaaaaaa"
    assert env["MLOPS_MODEL_SHA256"] == "1" * 64
    assert env["MLOPS_PORT"] == "8080" and env["MLOPS_MAX_REQUEST_SECONDS"] == "30"
    assert env["MLOPS_WORKERS"] == "1"
    # In-flight requests finish within the limit; the grace period covers preStop plus that.
    assert env["MLOPS_DRAIN_SECONDS"] == "32"
    assert env["TMPDIR"] == "/tmp"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]

    account = pulumi_mocks.one("kubernetes:core/v1:ServiceAccount", f"{name}-account").inputs
    assert account["automountServiceAccountToken"] is False
    hpa = pulumi_mocks.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", f"{name}-autoscaler").inputs
    assert hpa["spec"]["scaleTargetRef"]["name"] == "m-stable"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = pulumi_mocks.one("kubernetes:policy/v1:PodDisruptionBudget", f"{name}-disruption-budget").inputs
    assert pdb["spec"]["maxUnavailable"] == 1
    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-service").inputs
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "m",
        "app.kubernetes.io/component": "serving",
    }
    policy = pulumi_mocks.one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-network-policy"
    ).inputs
    clients, scraper = policy["spec"]["ingress"]
    assert clients["from"] == [{"podSelector": {"matchLabels": {"mlops.dev/client-of": "m"}}}]
    assert clients["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]
    assert scraper["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert scraper["ports"] == [{"port": 8080, "protocol": "TCP"}]

    out = pulumi_mocks.value(
        pulumi.Output.all(serving.endpoint, serving.release_id, serving.model_uri, serving.deployment_name)
    )
    assert out == ["http://m.ns.svc.cluster.local:80", "aaaaaaaaaaaa", "s3://b/m/aaaaaaaaaaaa", "m-stable"]
    assert serving.canary_deployment_name is None


def test_canary_splits_replicas_under_one_service(pulumi_mocks, unique) -> None:
    name = unique("serve")
    serving = pulumi_mocks.build(
        lambda: ModelServing(name, _args(canary=CANDIDATE, canary_weight=25, replicas=4, max_replicas=8))
    )
    stable = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-deployment").inputs
    canary = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-canary").inputs
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)
    assert canary["spec"]["template"]["metadata"]["labels"]["mlops.dev/release"] == "bbbbbbbbbbbb"
    assert canary["spec"]["selector"]["matchLabels"]["mlops.dev/track"] == "canary"
    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-service").inputs
    for deployment in (stable, canary):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    assert pulumi_mocks.value(serving.canary_deployment_name) == "m-canary"


def test_split_replicas() -> None:
    assert split_replicas(3, 0) == (3, 0)
    assert split_replicas(4, 25) == (3, 1)
    assert split_replicas(10, 50) == (5, 5)
    assert split_replicas(2, 99) == (1, 1)
    assert split_replicas(10, 1) == (9, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicas": 0}, "replicas must be >= 1, got 0"),
        ({"max_replicas": 2}, "max_replicas must be >= replicas (3), got 2"),
        ({"canary_weight": 10}, "canary_weight must be 0 without a canary, got 10"),
        (
            {"canary": CANDIDATE, "canary_weight": 100},
            "canary_weight must be in 1..99 with a canary, got 100",
        ),
        ({"workers": 0}, "workers must be in 1..64, got 0"),
        (
            {"service_type": "Ingress"},
            "service_type must be one of ['ClusterIP', 'NodePort', 'LoadBalancer']",
        ),
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


def test_the_worker_count_reaches_the_server_within_its_bound(pulumi_mocks, unique) -> None:
    from model.server.settings import MAX_WORKERS as SERVER_MAX_WORKERS

    assert MAX_WORKERS == SERVER_MAX_WORKERS
    name = unique("serve")
    pulumi_mocks.build(lambda: ModelServing(name, _args(workers=2, cpu_limit="2")))
    container = pulumi_mocks.one(DEPLOYMENT, f"{name}-deployment").inputs["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "MLOPS_WORKERS", "value": "2"} in container["env"]


def test_service_type_is_a_closed_choice() -> None:
    assert [t.value for t in ServiceType] == ["ClusterIP", "NodePort", "LoadBalancer"]


def test_rollouts_are_bounded_and_pulumi_waits_as_long_as_kubernetes(
    pulumi_mocks, unique, custom_timeouts
) -> None:
    name = unique("serve")
    args = _args(canary=CANDIDATE, canary_weight=25, replicas=4, max_replicas=8)
    pulumi_mocks.build(lambda: ModelServing(name, args))
    for role, pods in (("deployment", 7), ("canary", 1)):  # the autoscaler's maximum; the canary's 1
        spec = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-{role}").inputs["spec"]
        assert (spec["minReadySeconds"], spec["progressDeadlineSeconds"], spec["revisionHistoryLimit"]) == (
            10,
            300,
            5,
        )
        container = spec["template"]["spec"]["containers"][0]
        # A server may take its probes' budget to turn ready: 120 s to start, 5 s to be seen ready.
        assert probe_budget_seconds(container) == READY_WITHIN_SECONDS == 125
        assert spec["progressDeadlineSeconds"] > READY_WITHIN_SECONDS + spec["minReadySeconds"]
        # Each pod in turn may use up the deadline before Kubernetes calls the rollout failed.
        timeout = f"{pods * 300 + CONTROLLER_SLACK_SECONDS}s"
        assert custom_timeouts[(DEPLOYMENT, f"{name}-{role}")] == (timeout, timeout)


@pytest.mark.parametrize("service_type", [ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER])
def test_an_exposed_service_admits_exactly_its_client_cidrs(
    pulumi_mocks, unique, service_type: ServiceType
) -> None:
    name = unique("serve")
    args = _args(
        namespace="mlops-prod", service_type=service_type, client_cidrs=("203.0.113.0/24", "192.0.2.7")
    )
    pulumi_mocks.build(lambda: ModelServing(name, args))
    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-service").inputs["spec"]
    # The nodes keep the clients' addresses, so that the NetworkPolicy sees them.
    assert service["externalTrafficPolicy"] == "Local"
    expected_ranges = (
        ["203.0.113.0/24", "192.0.2.7/32"] if service_type is ServiceType.LOAD_BALANCER else None
    )
    assert service.get("loadBalancerSourceRanges") == expected_ranges
    objects = RenderResult("prod", None, list(pulumi_mocks.mocks.resources), {}).kubernetes_objects
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    cluster = Cluster.from_objects(objects)
    server = cluster.pod("mlops-prod", **{"mlops.dev/track": "stable"})
    assert cluster.allowed(Address("203.0.113.9"), server, 8080)
    assert cluster.allowed(Address("192.0.2.7"), server, 8080)
    assert not cluster.allowed(Address("192.0.2.8"), server, 8080)
    assert cluster.allowed(Address("203.0.113.9"), server, 8081)  # gRPC
    assert not cluster.allowed(Address("192.0.2.8"), server, 8081)
    assert not cluster.allowed(Address("203.0.113.9"), server, 9090)


@pytest.mark.parametrize("grpc", [True, False])
def test_grpc_is_served_on_its_own_named_port_or_not_at_all(pulumi_mocks, unique, grpc: bool) -> None:
    name = unique("serve")
    serving = pulumi_mocks.build(lambda: ModelServing(name, _args(grpc=grpc)))
    deployment = pulumi_mocks.one(DEPLOYMENT, f"{name}-deployment").inputs
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-service").inputs["spec"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]}
    if grpc:
        # The server's --grpc-port follows the container's named port, the Service forwards to it.
        assert env["MLOPS_GRPC_PORT"] == "8081"
        assert container_ports == {"http": 8080, "grpc": 8081}
        assert service_ports == {"http": (80, "http"), "grpc": (8081, "grpc")}
        assert [p.get("appProtocol") for p in service["ports"]] == [None, "kubernetes.io/h2c"]
        assert pulumi_mocks.value(serving.grpc_target) == "m.ns.svc.cluster.local:8081"
    else:
        # Off means no listening port at all, not just an undeclared one.
        assert env["MLOPS_GRPC_PORT"] == "0"
        assert container_ports == {"http": 8080}
        assert service_ports == {"http": (80, "http")}
        assert serving.grpc_target is None
    policy = pulumi_mocks.one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-network-policy"
    ).inputs
    client_ports = [p["port"] for p in policy["spec"]["ingress"][0]["ports"]]
    assert client_ports == ([8080, 8081] if grpc else [8080])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"service_type": ServiceType.NODE_PORT},
            "client_cidrs is required with service_type NodePort",
        ),
        ({"client_cidrs": ("10.0.0.1/8",)}, "client_cidrs: '10.0.0.1/8' is not a CIDR"),
        ({"client_cidrs": ("clients",)}, "client_cidrs: 'clients' is not a CIDR"),
        ({"min_ready_seconds": 0}, "min_ready_seconds must be >= 1, got 0"),
        (
            {"progress_deadline_seconds": 130},
            "progress_deadline_seconds (130) must exceed the 135 s a new pod may need to become available",
        ),
    ],
)
def test_invalid_exposure_and_rollout_args_name_the_argument(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        _args(**overrides)
    assert message in str(err.value)
