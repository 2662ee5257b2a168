"""NetworkPolicy semantics over a render: is a connection allowed?

A small evaluator of the networking.k8s.io/v1 rules (kubernetes.io/docs/concepts/services-networking/
network-policies), for tests that assert the flows a stack needs pass and others do not:

* a pod is isolated for ingress (egress) when a policy of its namespace selects it with that
  policy type; it then admits the union of those policies' rules; a pod-to-pod connection needs
  the sender's egress and the receiver's ingress;
* policyTypes defaults to Ingress, plus Egress when the policy has egress rules;
* a peer is a podSelector (the policy's namespace), a namespaceSelector (all its pods), both (the
  pods matching in the namespaces matching) or an ipBlock; a rule without `from`/`to` matches every
  peer, without `ports` every port; a named port is the destination pod's container port;
* traffic from or to the pod's own node is always allowed (`Node`);
* whether ipBlock matches pod addresses is up to the network plugin: `ipblock_matches_pods` picks
  the interpretation (True is the stricter test of a denial: more flows pass).

Pods come from the workloads' pod templates; namespaces carry the label the API server adds
(kubernetes.io/metadata.name). The rendered Service is not consulted: rules see the pod's port.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    """A pod: where it runs, its labels, its container ports (name -> (port, protocol)), its address."""

    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    ip: str = ""
    name: str = ""


@dataclass(frozen=True)
class Address:
    """An address outside the cluster (an S3 store, a database, a client behind a NodePort)."""

    ip: str


@dataclass(frozen=True)
class Node:
    """The node a pod runs on (kubelet probes, a NodePort reached on that node)."""


Peer = Pod | Address | Node


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """LabelSelector semantics: matchLabels and matchExpressions; an empty selector selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _policy_types(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


class Cluster:
    """The pods, namespaces and NetworkPolicies of one or more renders, and what they allow."""

    def __init__(
        self,
        pods: Sequence[Pod],
        namespaces: Mapping[str, Mapping[str, str]],
        policies: Sequence[Mapping[str, Any]],
        ipblock_matches_pods: bool = False,
    ) -> None:
        self.pods = list(pods)
        self.namespaces = {ns: {**lbl, NAME_LABEL: ns} for ns, lbl in namespaces.items()}
        for pod in self.pods:
            self.namespaces.setdefault(pod.namespace, {NAME_LABEL: pod.namespace})
        self.policies = list(policies)
        self.ipblock_matches_pods = ipblock_matches_pods

    @classmethod
    def from_objects(
        cls, objects: Iterable[Mapping[str, Any]], extra_pods: Sequence[Pod] = (), **kwargs: Any
    ) -> Cluster:
        """The cluster a render describes: its workloads' pods (addresses from 10.244.0.0/16),
        Namespaces and NetworkPolicies, plus `extra_pods` (CoreDNS, a client)."""
        objects = list(objects)
        addresses = (str(ipaddress.ip_address("10.244.0.10") + i) for i in itertools.count())
        pods = [_pod_of(o, next(addresses)) for o in objects if o.get("kind") in WORKLOAD_KINDS]
        extra = [
            p if p.ip else Pod(p.namespace, p.labels, p.ports, next(addresses), p.name) for p in extra_pods
        ]
        namespaces = {
            o["metadata"]["name"]: dict(o["metadata"].get("labels") or {})
            for o in objects
            if o.get("kind") == "Namespace"
        }
        policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
        return cls([*pods, *extra], namespaces, policies, **kwargs)

    def with_plugin(self, ipblock_matches_pods: bool) -> Cluster:
        return Cluster(self.pods, self.namespaces, self.policies, ipblock_matches_pods)

    def pod(self, namespace: str, **match: str) -> Pod:
        """The one pod of `namespace` whose labels include `match`."""
        found = [
            p for p in self.pods if p.namespace == namespace and selects({"matchLabels": match}, p.labels)
        ]
        assert len(found) == 1, f"expected one pod {match} in {namespace}, found {len(found)}"
        return found[0]

    def policies_selecting(self, pod: Pod, policy_type: str | None = None) -> list[Mapping[str, Any]]:
        return [
            p
            for p in self.policies
            if p["metadata"].get("namespace") == pod.namespace
            and selects(p["spec"].get("podSelector"), pod.labels)
            and (policy_type is None or policy_type in _policy_types(p["spec"]))
        ]

    def selected_pods(self, policy: Mapping[str, Any]) -> list[Pod]:
        namespace = policy["metadata"].get("namespace")
        return [
            p
            for p in self.pods
            if p.namespace == namespace and selects(policy["spec"].get("podSelector"), p.labels)
        ]

    def allowed(self, source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        """May `source` open a connection to `destination`'s `port`?"""
        if isinstance(source, Pod) and not self._passes(source, destination, port, protocol, "Egress"):
            return False
        return not isinstance(destination, Pod) or self._passes(
            destination, source, port, protocol, "Ingress"
        )

    def _passes(self, pod: Pod, other: Peer, port: int, protocol: str, direction: str) -> bool:
        """Does `pod`'s isolation in `direction` admit `other` (its source or destination)?"""
        if isinstance(other, Node):
            return True
        policies = self.policies_selecting(pod, direction)
        if not policies:
            return True
        target = pod if direction == "Ingress" else other  # whose container ports named ports name
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            namespace = policy["metadata"]["namespace"]
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                if peers and not any(self._peer_matches(p, other, namespace) for p in peers):
                    continue
                ports = rule.get("ports")
                if not ports or any(_port_matches(p, target, port, protocol) for p in ports):
                    return True
        return False

    def _peer_matches(self, peer: Mapping[str, Any], other: Peer, policy_namespace: str) -> bool:
        if "ipBlock" in peer:
            if isinstance(other, Address) or (isinstance(other, Pod) and self.ipblock_matches_pods):
                return _in_block(other.ip, peer["ipBlock"])
            return False
        if not isinstance(other, Pod):
            return False
        if "namespaceSelector" in peer:
            namespace_ok = selects(peer["namespaceSelector"], self.namespaces.get(other.namespace, {}))
        else:
            namespace_ok = other.namespace == policy_namespace
        return namespace_ok and selects(peer.get("podSelector"), other.labels)


def _in_block(ip: str, block: Mapping[str, Any]) -> bool:
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except") or [])


def _port_matches(rule_port: Mapping[str, Any], target: Peer, port: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        named = target.ports.get(wanted) if isinstance(target, Pod) else None
        return named == (port, protocol)
    return wanted <= port <= rule_port.get("endPort", wanted)


def _pod_of(workload: Mapping[str, Any], ip: str) -> Pod:
    template = workload["spec"]["template"]
    ports = {
        p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
        for c in template["spec"].get("containers", [])
        for p in c.get("ports") or []
        if p.get("name")
    }
    labels = dict(template.get("metadata", {}).get("labels") or {})
    return Pod(workload["metadata"]["namespace"], labels, ports, ip, workload["metadata"]["name"])
