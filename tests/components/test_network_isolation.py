"""Network isolation: every namespace the stacks create denies by default; the flows they need pass.

The NetworkPolicies of each stack's render are evaluated with tests/components/netpol.py, under
both readings of ipBlock the network plugins have (whether it also matches pod addresses).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from components.monitoring import MonitoringStack
from components.network import ANYWHERE, DNS_EGRESS, Endpoint, NetworkIsolation, NetworkIsolationArgs
from infra.render import RenderResult
from tests.components.netpol import Address, Cluster, Node, Pod
from tests.components.test_monitoring_component import ARGS as MONITORING_ARGS
from tests.components.test_monitoring_component import RETRAIN

TOKEN = "mlops:index:NetworkIsolation"
MODEL = "breast-cancer"
# CoreDNS as most clusters run it (53), and as the local cluster does (1053 behind kube-dns:53).
COREDNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})
LOCAL_COREDNS = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": (1053, "UDP"), "dns-tcp": (1053, "TCP")})
SERVING = {"app.kubernetes.io/component": "serving"}
TRAINING = {"app.kubernetes.io/component": "training"}
MLFLOW = {"app.kubernetes.io/name": "mlflow"}
IMAGE_REGISTRY = {"app.kubernetes.io/name": "image-registry"}
OUTSIDE = Address("198.51.100.7")


def _monitoring(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app}


def _clusters(render: RenderResult) -> Iterator[Cluster]:
    """The render's cluster under both ipBlock readings, with CoreDNS and a few foreign pods."""
    namespace = f"mlops-{render.stack}"
    extra = [
        COREDNS,
        LOCAL_COREDNS,
        Pod(namespace, {"mlops.dev/client-of": MODEL}, name="client"),
        Pod(namespace, {"app": "stray"}, name="stray"),
        Pod("default", {"app": "stranger"}, name="stranger"),
    ]
    cluster = Cluster.from_objects(render.kubernetes_objects, extra_pods=extra)
    yield cluster
    yield cluster.with_plugin(ipblock_matches_pods=True)


@pytest.fixture(params=["dev", "prod"])
def render(
    request: pytest.FixtureRequest, dev_render: RenderResult, prod_render: RenderResult
) -> RenderResult:
    return dev_render if request.param == "dev" else prod_render


def _named(cluster: Cluster, name: str) -> Pod:
    return next(p for p in cluster.pods if p.name == name)


def _stack_pods(cluster: Cluster) -> list[Pod]:
    return [p for p in cluster.pods if p.labels.get("app.kubernetes.io/part-of") == "mlops"]


def test_every_pod_is_isolated_both_ways_and_every_policy_selects_a_pod(render: RenderResult) -> None:
    cluster = Cluster.from_objects(render.kubernetes_objects)
    namespaces = {o["metadata"]["name"] for o in render.kubernetes_objects if o["kind"] == "Namespace"}
    assert namespaces == {f"mlops-{render.stack}", "monitoring"}
    for namespace in namespaces:
        deny = [
            p
            for p in cluster.policies
            if p["metadata"]["namespace"] == namespace
            and p["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        ]
        assert len(deny) == 1, f"no default deny in {namespace}"
    pods = _stack_pods(cluster)
    assert {p.namespace for p in pods} == namespaces
    for pod in pods:
        for direction in ("Ingress", "Egress"):
            assert cluster.policies_selecting(pod, direction), (pod.name, direction)
    for policy in cluster.policies:
        assert cluster.selected_pods(policy), policy["metadata"]["name"]


def test_the_flows_the_stacks_need_pass(render: RenderResult) -> None:
    namespace = f"mlops-{render.stack}"
    for cluster in _clusters(render):
        serving = cluster.pod(namespace, **SERVING)
        mlflow = cluster.pod(namespace, **MLFLOW)
        prometheus = cluster.pod("monitoring", **_monitoring("prometheus"))
        for pod in _stack_pods(cluster):
            for dns in (COREDNS, LOCAL_COREDNS):
                port = dns.ports["dns"][0]
                assert cluster.allowed(pod, _dns(cluster, dns), port, "UDP"), pod.name
                assert cluster.allowed(pod, _dns(cluster, dns), port, "TCP"), pod.name
            # The kubelet's probes, and `kubectl port-forward`, come from the pod's node.
            assert cluster.allowed(Node(), pod, 8080)
        assert cluster.allowed(prometheus, serving, 8080)
        assert cluster.allowed(_named(cluster, "client"), serving, 8080)
        assert cluster.allowed(_named(cluster, "client"), serving, 8081)  # gRPC
        assert cluster.allowed(cluster.pod("monitoring", **_monitoring("grafana")), prometheus, 9090)
        assert cluster.allowed(prometheus, cluster.pod("monitoring", **_monitoring("alertmanager")), 9093)
        if render.stack == "dev":
            # The artifact store is http://minio:9000, a name outside the cluster (kind's Docker network).
            store = Address("172.18.0.5")
            training = cluster.pod(namespace, **TRAINING)
            assert cluster.allowed(training, mlflow, 5000)
            for pod in (training, serving, mlflow):
                assert cluster.allowed(pod, store, 9000), pod.name
            # Pulls by the node's kubelet, pushes and `pulumi up` through the node's NodePorts.
            assert cluster.allowed(Node(), cluster.pod(namespace, **IMAGE_REGISTRY), 5000)
            assert cluster.allowed(Node(), mlflow, 5000)
        else:
            # AWS S3 (HTTPS, its addresses change) and MLflow's PostgreSQL database.
            s3, database = Address("52.95.150.10"), Address("10.20.0.5")
            assert cluster.allowed(serving, s3, 443)
            assert cluster.allowed(mlflow, s3, 443)
            assert cluster.allowed(mlflow, database, 5432)


def _dns(cluster: Cluster, dns: Pod) -> Pod:
    """The cluster's copy of `dns` (with its address)."""
    return next(p for p in cluster.pods if p.namespace == "kube-system" and p.ports == dns.ports)


def test_other_flows_are_denied(render: RenderResult) -> None:
    namespace = f"mlops-{render.stack}"
    for cluster in _clusters(render):
        serving = cluster.pod(namespace, **SERVING)
        mlflow = cluster.pod(namespace, **MLFLOW)
        stray, stranger = _named(cluster, "stray"), _named(cluster, "stranger")
        grafana = cluster.pod("monitoring", **_monitoring("grafana"))
        alertmanager = cluster.pod("monitoring", **_monitoring("alertmanager"))
        prometheus = cluster.pod("monitoring", **_monitoring("prometheus"))
        denied: list[tuple[Any, Any, int]] = [
            # The servers never call MLflow; only the clients and the scraper call the servers.
            (serving, mlflow, 5000),
            (mlflow, serving, 8080),
            (stray, serving, 8080),
            (stranger, serving, 8080),
            (grafana, serving, 8080),
            (alertmanager, serving, 8080),
            (stranger, serving, 8081),
            (prometheus, serving, 8081),  # the scraper reads /metrics over HTTP only
            (stranger, mlflow, 5000),
            (stray, mlflow, 5000),
            (OUTSIDE, serving, 8080),  # a ClusterIP Service admits no outside address
            (OUTSIDE, mlflow, 5000),  # nor MLflow's NodePort without mlops:network.node_cidrs
            (serving, OUTSIDE, 80),
            (serving, Address("8.8.8.8"), 53),  # DNS goes to the cluster DNS only
            (stranger, prometheus, 9090),
        ]
        if render.stack == "dev":
            training = cluster.pod(namespace, **TRAINING)
            registry = cluster.pod(namespace, **IMAGE_REGISTRY)
            denied += [
                (training, serving, 8080),
                (serving, registry, 5000),  # images are pulled by the kubelet, not by pods
                (training, registry, 5000),
                (OUTSIDE, registry, 5000),
                (serving, OUTSIDE, 443),  # the dev store answers on 9000 only
            ]
        else:
            denied += [
                (serving, Address("10.20.0.5"), 5432),  # the database is MLflow's
                (serving, OUTSIDE, 9000),
            ]
        if not cluster.ipblock_matches_pods:
            # Where ipBlock also matches pods, an egress to "anywhere" on 443 (prod's default
            # mlops:network.egress_cidrs) reaches pods that do not isolate their ingress too.
            denied.append((serving, stranger, 443))
        for source, destination, port in denied:
            assert not cluster.allowed(source, destination, port), (source, destination, port)


def test_alertmanager_alone_reaches_the_retrain_trigger(pulumi_mocks, unique) -> None:
    name = unique("mon")
    pulumi_mocks.build(lambda: MonitoringStack(name, replace(MONITORING_ARGS, retrain=RETRAIN)))
    objects = RenderResult("test", None, list(pulumi_mocks.mocks.resources), {}).kubernetes_objects
    cluster = Cluster.from_objects(objects, extra_pods=[COREDNS])
    trigger = cluster.pod("monitoring", **_monitoring("retrain-trigger"))
    assert cluster.allowed(cluster.pod("monitoring", **_monitoring("alertmanager")), trigger, 8080)
    assert cluster.allowed(trigger, Address("140.82.112.6"), 443)  # GitHub's API
    assert cluster.allowed(trigger, _dns(cluster, COREDNS), 53, "UDP")
    for other in ("prometheus", "grafana"):
        assert not cluster.allowed(cluster.pod("monitoring", **_monitoring(other)), trigger, 8080)
    assert not cluster.allowed(cluster.pod("monitoring", **_monitoring("alertmanager")), trigger, 9090)


def _isolation(**overrides: Any) -> NetworkIsolationArgs:
    values: dict[str, Any] = {
        "stack": "qa",
        "namespace": "mlops-qa",
        "model_name": "m",
        "artifact_store": Endpoint("minio.storage.svc.cluster.local", 9000),
    }
    values.update(overrides)
    return NetworkIsolationArgs(**values)


def test_component_tree_and_the_knobs(pulumi_mocks, unique) -> None:
    name = unique("net")
    args = _isolation(
        mlflow_node_port=True,
        image_registry=True,
        node_cidrs=("10.0.0.0/24",),
        tracking_client_namespaces=("ingress-nginx",),
        egress_cidrs=("10.20.0.0/16",),
        database=Endpoint("db.example.internal", 5432),
    )
    component = pulumi_mocks.build(lambda: NetworkIsolation(name, args))
    assert component.pulumi_resource_type == TOKEN
    roles = ["dns", "serving", "serving-clients", "training", "mlflow", "image-registry", "default-deny"]
    assert pulumi_mocks.value(component.policy_names) == [f"{name}-{role}" for role in roles]
    children = pulumi_mocks.children_of(TOKEN, name)
    assert {c.type for c in children} == {"kubernetes:networking.k8s.io/v1:NetworkPolicy"} and len(
        children
    ) == 7
    objects = RenderResult("qa", None, list(pulumi_mocks.mocks.resources), {}).kubernetes_objects
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    pods = [
        Pod("mlops-qa", {"app.kubernetes.io/name": app, "app.kubernetes.io/component": component})
        for app, component in (
            ("m", "training"),
            ("mlflow", "registry"),
            ("image-registry", "image-registry"),
        )
    ]
    foreign = [Pod("ingress-nginx", {}, name="ingress"), Pod("storage", {}, name="minio")]
    cluster = Cluster.from_objects(objects, extra_pods=[*pods, *foreign])
    training, mlflow, registry = (cluster.pod("mlops-qa", **p.labels) for p in pods)
    ingress, store = _named(cluster, "ingress"), _named(cluster, "minio")
    assert cluster.allowed(training, store, 9000)  # a store in-cluster, by its Service's namespace
    assert not cluster.allowed(training, store, 9001)
    assert cluster.allowed(ingress, mlflow, 5000)
    assert not cluster.allowed(ingress, registry, 5000)
    other_node = Address("10.0.0.9")  # NodePort traffic forwarded by another node
    assert cluster.allowed(other_node, mlflow, 5000) and cluster.allowed(other_node, registry, 5000)
    assert not cluster.allowed(Address("10.0.1.9"), registry, 5000)
    assert cluster.allowed(mlflow, Address("10.20.3.4"), 5432)  # the database, within egress_cidrs
    assert not cluster.allowed(mlflow, Address("10.30.3.4"), 5432)


def test_a_stack_using_an_outside_mlflow_reaches_it_and_runs_no_mlflow_policy(pulumi_mocks, unique) -> None:
    name = unique("net")
    tracking = Endpoint.from_url("https://mlflow.example.com")
    pulumi_mocks.build(lambda: NetworkIsolation(name, _isolation(tracking_server=tracking)))
    names = [c.name for c in pulumi_mocks.children_of(TOKEN, name)]
    assert f"{name}-mlflow" not in names
    training = pulumi_mocks.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-training").inputs
    assert training["spec"]["egress"][0] == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }


@pytest.mark.parametrize(("grpc", "ports"), [(True, [8080, 8081]), (False, [8080])])
def test_pods_reach_the_grpc_port_only_where_the_servers_serve_grpc(
    pulumi_mocks, unique, grpc: bool, ports: list[int]
) -> None:
    name = unique("net")
    pulumi_mocks.build(lambda: NetworkIsolation(name, _isolation(grpc=grpc)))
    policy = pulumi_mocks.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{name}-serving-clients")
    (rule,) = policy.inputs["spec"]["egress"]
    assert [p["port"] for p in rule["ports"]] == ports


@pytest.mark.parametrize(
    ("url", "default_port", "endpoint", "peers"),
    [
        ("http://10.88.0.1:8333", 443, Endpoint("10.88.0.1", 8333), [{"ipBlock": {"cidr": "10.88.0.1/32"}}]),
        ("http://[fd00::5]:9000", 443, Endpoint("fd00::5", 9000), [{"ipBlock": {"cidr": "fd00::5/128"}}]),
        (
            "http://minio.storage.svc:9000",
            443,
            Endpoint("minio.storage.svc", 9000),
            [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}],
        ),
        ("http://minio:9000", 443, Endpoint("minio", 9000), [{"ipBlock": {"cidr": c}} for c in ANYWHERE]),
        (None, 443, Endpoint(None, 443), [{"ipBlock": {"cidr": c}} for c in ANYWHERE]),
        ("https://s3.eu-west-1.amazonaws.com", 443, Endpoint("s3.eu-west-1.amazonaws.com", 443), None),
        ("postgresql+psycopg2://u:p@db.internal/mlflow", 5432, Endpoint("db.internal", 5432), None),
        ("mysql://u:p@db.internal:3307/mlflow", 5432, Endpoint("db.internal", 3307), None),
        ("mysql://u:p@db.internal/mlflow", 5432, Endpoint("db.internal", 3306), None),
    ],
)
def test_endpoints_from_urls(url: str | None, default_port: int, endpoint: Endpoint, peers: Any) -> None:
    assert Endpoint.from_url(url, default_port) == endpoint
    rule = endpoint.rule(ANYWHERE)
    assert rule["ports"] == [{"port": endpoint.port, "protocol": "TCP"}]
    if peers is not None:
        assert rule["to"] == peers


def test_a_url_with_a_bad_port_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        Endpoint.from_url("postgresql://mlflow:pa#ss@db.internal/mlflow", 5432)  # an unquoted '#'
    assert str(err.value) == "a postgresql:// URL's port is not a number in 0..65535"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"egress_cidrs": ("10.0.0.0/33",)}, "egress_cidrs: '10.0.0.0/33' is not a CIDR"),
        ({"node_cidrs": ("10.0.0.1/24",)}, "node_cidrs: '10.0.0.1/24' is not a CIDR"),
        ({"egress_cidrs": ()}, "egress_cidrs must name at least one range"),
        (
            {"tracking_server": Endpoint("mlflow.example.com", 443), "database": Endpoint("db", 5432)},
            "database and mlflow_node_port describe an MLflow run here",
        ),
    ],
)
def test_invalid_args_name_the_argument(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        _isolation(**overrides)
    assert message in str(err.value)


def test_dns_rule_names_coredns_ports_by_number_and_by_name() -> None:
    """The rule sees CoreDNS' own port (after kube-proxy's DNAT): 53 in most clusters, 1053 in
    the local one, which both name dns / dns-tcp."""
    assert {(p["port"], p["protocol"]) for p in DNS_EGRESS["ports"]} == {
        (53, "UDP"),
        (53, "TCP"),
        ("dns", "UDP"),
        ("dns-tcp", "TCP"),
    }
