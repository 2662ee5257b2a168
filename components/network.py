"""NetworkIsolation: the stack namespace's default deny, and the flows its workloads need.

NetworkPolicy semantics this relies on (kubernetes.io/docs/concepts/services-networking/network-policies):

* policies add up: a pod selected by any policy of a type (Ingress, Egress) is isolated in that
  direction and admits the union of those policies' rules; a connection between two pods needs
  the sender's egress and the receiver's ingress to allow it;
* rules see the packet after kube-proxy's DNAT: an allow to a Service names the backend pods and
  their container port (CoreDNS listens on 53 behind kube-dns:53 in most clusters, on 1053 in
  the local one: the rule also names the ports `dns` and `dns-tcp`, which both call them);
* traffic from the pod's own node (kubelet probes, `kubectl port-forward`, a NodePort reached on
  that node) is always allowed; NodePort or LoadBalancer traffic forwarded by another node comes
  from that node's address unless the Service keeps the client's (externalTrafficPolicy Local);
* ipBlock is for addresses outside the cluster; whether it also matches pod addresses is up to
  the network plugin, so no flow between pods relies on it.

Only a network plugin that implements NetworkPolicy enforces any of this (docs/network.md).
"""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.common import Component, labels, object_name
from components.registry import IMAGE_REGISTRY_SERVICE, MLFLOW_PORT, MLFLOW_SERVICE, REGISTRY_PORT
from components.serving import GRPC_PORT
from components.serving import PORT as SERVING_PORT

__all__ = [
    "ANYWHERE",
    "DNS_EGRESS",
    "Endpoint",
    "NetworkIsolation",
    "NetworkIsolationArgs",
    "cidr_list",
    "default_deny",
    "dns_policy",
]

ANYWHERE = ("0.0.0.0/0", "::/0")
NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace, holding its name."""
DNS_EGRESS: dict[str, Any] = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {NAME_LABEL: "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
        {"port": "dns", "protocol": "UDP"},
        {"port": "dns-tcp", "protocol": "TCP"},
    ],
}
"""Egress to the cluster DNS (CoreDNS or kube-dns pods, k8s-app=kube-dns in kube-system)."""
_SERVICE_HOST = re.compile(r"^(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?$")
_DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mssql": 1433,
}


def cidr_list(values: Sequence[str], key: str | None = None) -> tuple[str, ...]:
    """`values` as CIDRs (a bare address is one host); a ValueError naming the bad value (and `key`)."""
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(str(value), strict=True)))
        except ValueError as exc:
            where = f"{key}: " if key else ""
            raise ValueError(f"{where}{value!r} is not a CIDR such as 203.0.113.0/24 ({exc})") from None
    return tuple(out)


def _selector(app: str, component: Component) -> dict[str, str]:
    """The pod selector of one workload (the subset of `labels()` the components select by)."""
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": component}


def _pods(selector: Mapping[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": dict(selector)}}


def _namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAME_LABEL: namespace}}}


def _tcp(port: int | str) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"}]


def _ip_blocks(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]


@dataclass(frozen=True)
class Endpoint:
    """A server pods connect to, as a NetworkPolicy can pin it: its host and port."""

    host: str | None
    """An IP address, a Service name (<service>.<namespace>.svc[.cluster.local]) or another name;
    None for a name outside the cluster that is not known here (AWS S3's regional endpoints)."""
    port: int
    """The server's port; for a Service, its pods' port (the rule sees the packet after DNAT)."""

    @classmethod
    def from_url(cls, url: str | None, default_port: int = 443) -> Endpoint:
        """The endpoint of `url` (port: the URL's, else its scheme's); None: AWS (HTTPS)."""
        if not url:
            return cls(None, default_port)
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0]
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme, default_port)
        except ValueError:
            # Not echoed: a database URL holds its password.
            raise ValueError(f"a {scheme}:// URL's port is not a number in 0..65535") from None
        return cls(parts.hostname, port)

    def rule(self, egress_cidrs: Sequence[str]) -> dict[str, Any]:
        """The egress rule reaching it: an address by itself, a Service by its namespace, any other
        name within `egress_cidrs` (its addresses are not known here)."""
        return {"to": self._peers(egress_cidrs), "ports": _tcp(self.port)}

    def _peers(self, egress_cidrs: Sequence[str]) -> list[dict[str, Any]]:
        if self.host is None:
            return _ip_blocks(egress_cidrs)
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            service = _SERVICE_HOST.match(self.host)
            return [_namespace_peer(service["namespace"])] if service else _ip_blocks(egress_cidrs)
        return _ip_blocks([str(ipaddress.ip_network(address))])


@dataclass(frozen=True)
class NetworkIsolationArgs:
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: pulumi.Input[str]
    """The stack's namespace (from its Namespace object, so the policies follow it)."""
    model_name: str
    """The served model: the serving and training pods' app.kubernetes.io/name."""
    artifact_store: Endpoint
    """The S3 API the training Job, the model servers and MLflow reach (as pods reach it)."""
    training: bool = True
    """The stack runs the training Job here (dev); a stack serving a pinned release does not."""
    tracking_server: Endpoint | None = None
    """An MLflow outside the stack, which the training Job calls; None: MLflow runs here."""
    database: Endpoint | None = None
    """The external database of the MLflow that runs here; None: SQLite on its volume."""
    mlflow_node_port: bool = False
    """MLflow is exposed on a NodePort: it admits `node_cidrs` (traffic forwarded by a node)."""
    image_registry: bool = False
    """The in-cluster image registry runs here: it admits `node_cidrs` (pulls and pushes)."""
    egress_cidrs: tuple[str, ...] = ANYWHERE
    """Where endpoints named by host name may be (their addresses are not known here)."""
    node_cidrs: tuple[str, ...] = ()
    """The nodes' addresses; traffic from a pod's own node is always allowed."""
    tracking_client_namespaces: tuple[str, ...] = ()
    """Namespaces whose pods may call MLflow (an ingress controller serving its URL)."""
    grpc: bool = True
    """The model servers serve gRPC (ModelServingArgs.grpc): pods may reach its port too."""

    def __post_init__(self) -> None:
        # Normalised (10.0.0.7 -> 10.0.0.7/32), as ipBlock wants.
        for key in ("egress_cidrs", "node_cidrs"):
            object.__setattr__(self, key, cidr_list(getattr(self, key), key))
        if not self.egress_cidrs:
            raise ValueError("egress_cidrs must name at least one range (the default is anywhere)")
        if self.tracking_server is not None and (self.database or self.mlflow_node_port):
            raise ValueError("database and mlflow_node_port describe an MLflow run here, not tracking_server")


class NetworkIsolation(pulumi.ComponentResource):
    """Default deny in the stack's namespace, and the allows its workloads need (docs/network.md)."""

    policy_names: pulumi.Output[list[str]]
    """The names of the NetworkPolicies, the default deny last."""

    def __init__(
        self, name: str, args: NetworkIsolationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:NetworkIsolation", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        serving = _selector(args.model_name, "serving")
        store = args.artifact_store.rule(args.egress_cidrs)
        allows = [
            dns_policy(f"{name}-dns", args.namespace, self._labels("registry"), self._child),
            # The model servers load their release from the artifact store.
            self._policy("serving", "serving", serving, egress=[store]),
            # Every pod here may open connections to the servers; the servers' own policy
            # (ModelServing) admits only their clients (mlops.dev/client-of) and the scraper.
            self._policy(
                "serving-clients",
                "serving",
                {},
                egress=[
                    {
                        "to": [_pods(serving)],
                        "ports": _tcp(SERVING_PORT) + (_tcp(GRPC_PORT) if args.grpc else []),
                    }
                ],
            ),
        ]
        if args.training:
            allows.append(self._training(store))
        if args.tracking_server is None:
            allows.append(self._mlflow(store))
        if args.image_registry and args.node_cidrs:
            registry_pods = _selector(IMAGE_REGISTRY_SERVICE, "image-registry")
            ingress = [{"from": _ip_blocks(args.node_cidrs), "ports": _tcp(REGISTRY_PORT)}]
            allows.append(self._policy("image-registry", "image-registry", registry_pods, ingress=ingress))
        # Last, so that the namespace never denies what the stack needs before the allows exist.
        deny = default_deny(
            f"{name}-default-deny",
            args.namespace,
            self._labels("registry"),
            pulumi.ResourceOptions(parent=self, depends_on=allows),
        )
        self.policy_names = pulumi.Output.all(*(object_name(p) for p in [*allows, deny]))
        self.register_outputs({"policy_names": self.policy_names})

    def _labels(self, component: Component) -> dict[str, str]:
        return labels("network", component, self._args.stack)

    def _training(self, store: dict[str, Any]) -> k8s.networking.v1.NetworkPolicy:
        args = self._args
        if args.tracking_server is not None:
            tracking = args.tracking_server.rule(args.egress_cidrs)
        else:
            tracking = {"to": [_pods(_selector(MLFLOW_SERVICE, "registry"))], "ports": _tcp(MLFLOW_PORT)}
        training = _selector(args.model_name, "training")
        return self._policy("training", "training", training, egress=[tracking, store])

    def _mlflow(self, store: dict[str, Any]) -> k8s.networking.v1.NetworkPolicy:
        args = self._args
        sources: list[dict[str, Any]] = [_namespace_peer(ns) for ns in args.tracking_client_namespaces]
        if args.training:
            sources.append(_pods(_selector(args.model_name, "training")))
        if args.mlflow_node_port:
            sources += _ip_blocks(args.node_cidrs)
        ingress = [{"from": sources, "ports": _tcp(MLFLOW_PORT)}] if sources else []
        egress = [store, *([args.database.rule(args.egress_cidrs)] if args.database else [])]
        mlflow = _selector(MLFLOW_SERVICE, "registry")
        return self._policy("mlflow", "registry", mlflow, ingress=ingress, egress=egress)

    def _policy(
        self,
        role: str,
        component: Component,
        selector: Mapping[str, str],
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None,
    ) -> k8s.networking.v1.NetworkPolicy:
        spec: dict[str, Any] = {"podSelector": {"matchLabels": dict(selector)} if selector else {}}
        spec["policyTypes"] = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules]
        if ingress:
            spec["ingress"] = ingress
        if egress:
            spec["egress"] = egress
        return k8s.networking.v1.NetworkPolicy(
            f"{self._name}-{role}",
            metadata={"namespace": self._args.namespace, "labels": self._labels(component)},
            spec=spec,
            opts=self._child,
        )


def _namespace_wide(
    resource_name: str,
    namespace: pulumi.Input[str],
    object_labels: Mapping[str, str],
    spec: dict[str, Any],
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    return k8s.networking.v1.NetworkPolicy(
        resource_name,
        metadata={"namespace": namespace, "labels": dict(object_labels)},
        spec={"podSelector": {}, **spec},
        opts=opts,
    )


def default_deny(
    resource_name: str,
    namespace: pulumi.Input[str],
    object_labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    """Every pod of `namespace` (now or later) is isolated both ways: only allowed flows pass."""
    spec = {"policyTypes": ["Ingress", "Egress"]}
    return _namespace_wide(resource_name, namespace, object_labels, spec, opts)


def dns_policy(
    resource_name: str,
    namespace: pulumi.Input[str],
    object_labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    """Every pod of `namespace` may query the cluster DNS."""
    spec = {"policyTypes": ["Egress"], "egress": [DNS_EGRESS]}
    return _namespace_wide(resource_name, namespace, object_labels, spec, opts)
