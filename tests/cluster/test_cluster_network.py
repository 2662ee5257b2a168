"""The local cluster keeps the project's network rules, proven with real pods.

* Egress: the MLOPS-CLUSTER-EGRESS chain is first in FORWARD and INPUT and drops every packet
  from a pod to an address outside the pod and service ranges and the bridge address: a pod
  reaches a listener on the bridge address, but not the same listener through another of the
  host's addresses, nor a TEST-NET address (and the DROP rule's counters show it was the rule).
* DNS: cluster names resolve; any other name is refused at once, never forwarded.
* NetworkPolicy: enforced by the controller scripts/cluster runs (kube-network-policies): a
  default-deny ingress policy blocks pod A -> pod B, an allow for A's labels admits A (not C),
  a default-deny egress policy with DNS allowed blocks A -> B while A still resolves cluster
  names, and deleting the policies restores the traffic.
* Images: a pod runs the serving image by digest from the locally imported archive, and a pull
  from any registry that is not on loopback fails without leaving the machine.

All traffic goes to loopback, the bridge address or the cluster's own ranges; every wait is
bounded.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from components.network import DNS_EGRESS
from tests.cluster.conftest import Cluster, pod_manifest
from tests.services import free_port

# The first test also pays for the session fixture: a cold scripts/bootstrap-cluster builds
# Kubernetes and the images (tens of minutes); scripts/test.sh runs it before pytest.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90 * 60)]

# TEST-NET-2 (RFC 5737): never assigned. Not TEST-NET-1: on these machines 192.0.2.0/24 is
# the real host network.
OUTSIDE = "198.51.100.1"
CONNECT_TIMEOUT_S = 3

# Run in a pod: try a TCP connect to each host:port given as JSON in argv[1]; print the
# outcome of each (ok / timeout / the error) as JSON.
CONNECT_PROBE = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(float(sys.argv[2]))
    try:
        s.connect((host, port))
        s.sendall(b"probe")
        out[host] = "ok"
    except socket.timeout:
        out[host] = "timeout"
    except OSError as e:
        out[host] = "error: " + (e.strerror or type(e).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""

# Run in a pod: resolve names through the pod's resolver (glibc, /etc/resolv.conf), and send
# one raw DNS query per name straight to the cluster DNS service, printing rcodes and times.
DNS_PROBE = """
import json, random, socket, struct, sys, time
server, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    t = time.monotonic()
    try:
        addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 443, socket.AF_INET, socket.SOCK_STREAM)})
        res = {"resolved": addrs}
    except socket.gaierror as e:
        res = {"error": e.strerror}
    res["resolver_s"] = round(time.monotonic() - t, 3)
    qid = random.randrange(65536)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\\0"
    query += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    t = time.monotonic()
    try:
        s.sendto(query, (server, 53))
        reply = s.recv(4096)
        rid, flags, _, ancount = struct.unpack(">HHHH", reply[:8])
        res.update(rcode=flags & 0xF, answers=ancount, id_ok=rid == qid)
    except socket.timeout:
        res["rcode"] = "timeout"
    res["raw_s"] = round(time.monotonic() - t, 3)
    out[name] = res
print(json.dumps(out))
"""


class Listener:
    """A TCP listener on the host (all addresses) that records who connected."""

    def __init__(self) -> None:
        self.port = free_port()
        self.peers: list[str] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("0.0.0.0", self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("network-test")
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def probe_pod(cluster: Cluster, namespace: str) -> str:
    """A long-running pod of the serving image (it has Python) to run probes in."""
    assert "serving" in cluster.images, f"no serving image in {cluster.images}: scripts/build-images"
    cluster.apply(
        pod_manifest(
            "probe", namespace, cluster.images["serving"], ["python", "-c", "import time; time.sleep(900)"]
        )
    )
    cluster.wait_pod("probe", namespace, phases=("Running",), timeout=120)
    return "probe"


def _iptables(*args: str) -> str:
    return subprocess.run(
        ["iptables", "-w", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _drop_packets(cluster: Cluster) -> int:
    """Packets counted by the chain's final DROP rule."""
    for line in _iptables("-L", cluster.egress_chain, "-n", "-v", "-x").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "DROP":
            return int(fields[0])
    raise AssertionError(f"no DROP rule in {cluster.egress_chain}")


def _host_addresses(cluster: Cluster) -> list[str]:
    """IPv4 addresses of this host other than loopback and the bridge."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.split("\n"):
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if match:
            address = ipaddress.IPv4Address(match.group(1))
            if not address.is_loopback and address != cluster.bridge_ip:
                found.append(str(address))
    return found


def test_egress_chain_is_installed_first(cluster: Cluster) -> None:
    chain = _iptables("-S", cluster.egress_chain).splitlines()
    assert f"-A {cluster.egress_chain} -d {cluster.pod_cidr} -j RETURN" in chain
    assert f"-A {cluster.egress_chain} -d {cluster.service_cidr} -j RETURN" in chain
    assert f"-A {cluster.egress_chain} -d {cluster.bridge_ip}/32 -j RETURN" in chain
    assert chain[-1].endswith("-j DROP"), chain
    for hook in ("FORWARD", "INPUT"):
        rules = _iptables("-S", hook).splitlines()[1:]  # the first line is the policy
        first_two = rules[:2]
        assert f"-A {hook} -s {cluster.pod_cidr} -j {cluster.egress_chain}" in first_two, rules[:5]
        assert f"-A {hook} -i {cluster.facts['bridge']} -j {cluster.egress_chain}" in first_two, rules[:5]
    # Pod traffic is never masqueraded: no CNI NAT chains, no MASQUERADE of the pod range.
    nat = _iptables("-t", "nat", "-S")
    assert "CNI-" not in nat
    assert not [r for r in nat.splitlines() if f"-s {cluster.pod_cidr}" in r and "MASQUERADE" in r]


def test_pods_reach_only_the_cluster_and_the_bridge(cluster: Cluster, namespace: str, probe_pod: str) -> None:
    # The rule must be in place before any packet is sent to an outside address.
    test_egress_chain_is_installed_first(cluster)
    listener = Listener()
    try:
        host_others = _host_addresses(cluster)
        targets = [str(cluster.bridge_ip), *host_others, OUTSIDE]
        before = _drop_packets(cluster)
        start = time.monotonic()
        proc = cluster.exec(
            probe_pod,
            namespace,
            "python",
            "-c",
            CONNECT_PROBE,
            json.dumps([[t, listener.port] for t in targets]),
            str(CONNECT_TIMEOUT_S),
            timeout=60,
        )
        took = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout)
        after = _drop_packets(cluster)
    finally:
        listener.close()
    assert results[str(cluster.bridge_ip)] == "ok", results
    assert any(ipaddress.IPv4Address(p) in cluster.pod_cidr for p in listener.peers), listener.peers
    # Dropped, not refused or unreachable: the SYNs vanish, so the connects time out.
    for target in [*host_others, OUTSIDE]:
        assert results[target] == "timeout", results
    assert after > before, f"the DROP rule counted no packet ({before} -> {after})"
    assert took < 60


def test_cluster_dns_answers_only_cluster_names(cluster: Cluster, namespace: str, probe_pod: str) -> None:
    api_name = f"kubernetes.default.svc.{cluster.cluster_domain}"
    proc = cluster.exec(
        probe_pod,
        namespace,
        "python",
        "-c",
        DNS_PROBE,
        str(cluster.dns_ip),
        api_name,
        "example.com",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)

    inside = results[api_name]
    assert inside["resolved"] == [str(cluster.service_cidr[1])], inside
    assert inside["rcode"] == 0 and inside["answers"] >= 1 and inside["id_ok"], inside

    outside = results["example.com"]
    assert "error" in outside, f"example.com resolved inside the cluster: {outside}"
    assert outside["resolver_s"] < 5, f"the failure took {outside['resolver_s']}s: a forward or a timeout"
    # Answered at once with REFUSED (5) or NXDOMAIN (3): not forwarded, not left to time out.
    assert outside["rcode"] in (3, 5), outside
    assert outside["raw_s"] < 1, outside

    resolv = cluster.exec(probe_pod, namespace, "cat", "/etc/resolv.conf").stdout
    assert re.findall(r"^nameserver\s+(\S+)", resolv, re.M) == [str(cluster.dns_ip)], resolv


def test_serving_image_runs_by_digest_without_a_registry(cluster: Cluster, namespace: str) -> None:
    image = cluster.images.get("serving", "")
    repository, _, digest = image.partition("@")
    assert repository.startswith("localhost/") and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
    run = cluster.run_pod(
        "serving-import",
        namespace,
        image,
        ["python", "-c", "import model.server; print('model.server imported')"],
        timeout=120,
    )
    assert run.phase == "Succeeded", run.logs
    assert "model.server imported" in run.logs
    status = run.pod["status"]["containerStatuses"][0]
    assert status["imageID"].endswith(digest), status
    events = cluster.kubectl(
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=serving-import",
        "-o",
        "json",
    ).stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "Pulling" not in reasons, reasons
    assert "Pulled" in reasons, reasons  # "Container image ... already present on machine"


def test_claims_without_a_class_bind_to_local_volumes(cluster: Cluster, namespace: str) -> None:
    """The stacks' claims (no storageClassName, ReadWriteOnce, 2Gi) bind and uid 10001 writes."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    pod = pod_manifest(
        "writer",
        namespace,
        cluster.images["serving"],
        ["sh", "-c", "echo ok > /data/probe && cat /data/probe"],
    )
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    cluster.apply(claim, pod)
    done = cluster.wait_pod("writer", namespace, timeout=120)
    logs = cluster.kubectl("-n", namespace, "logs", "writer", check=False).stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert logs.strip() == "ok"
    bound = cluster.get_json("-n", namespace, "pvc", "data")
    assert bound["status"]["phase"] == "Bound", bound["status"]
    assert bound["spec"]["storageClassName"] == cluster.storage_class
    assert bound["status"]["capacity"]["storage"] == "2Gi"


def test_no_image_pull_leaves_the_machine(cluster: Cluster, namespace: str) -> None:
    # containerd's only way out is a proxy on a closed loopback port.
    cluster.apply(
        pod_manifest(
            "pull-outside", namespace, "docker.io/library/busybox:1.36", ["true"], pull_policy="Always"
        )
    )
    deadline = time.monotonic() + 60
    message = ""
    while time.monotonic() < deadline:
        pod = cluster.get_json("-n", namespace, "pod", "pull-outside")
        waiting = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {})
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting.get("message"):
            message = waiting["message"]
            break
        time.sleep(0.5)
    assert message, "the pull neither failed nor succeeded within 60s"
    assert "127.0.0.1:9" in message, message


# ------------------------------------------------------------------ NetworkPolicy --
# scripts/cluster runs kube-network-policies (scripts/bootstrap-netpol) on the host: its nftables
# table queues the first packet of each connection to or from a pod a policy selects, and it
# accepts or drops the packet. Policies take effect asynchronously (informers, then the table's
# address set), so each expectation is polled for at most POLICY_WAIT_S.
POLICY_WAIT_S = 30
SERVER_PORT = 8080
# Run in a pod: accept TCP connections on argv[1] and close them.
TCP_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
while True:
    s.accept()[0].close()
"""


@dataclass
class PolicyPods:
    """Pods named and labelled (role=) server (B, listening on SERVER_PORT), client (A) and
    other (C: traffic that a policy for A's labels must not admit), in a namespace of their own."""

    namespace: str
    server_ip: str


@pytest.fixture(scope="module")
def policy_pods(cluster: Cluster) -> Iterator[PolicyPods]:
    assert "serving" in cluster.images, f"no serving image in {cluster.images}: scripts/build-images"
    namespace = cluster.create_namespace("netpol-test")
    image = cluster.images["serving"]
    sleep = ["python", "-c", "import time; time.sleep(900)"]
    pods = []
    for name, role, command in [
        ("server", "server", ["python", "-c", TCP_SERVER, str(SERVER_PORT)]),
        ("client", "client", sleep),
        ("other", "other", sleep),
    ]:
        pod = pod_manifest(name, namespace, image, command)
        pod["metadata"]["labels"]["role"] = role
        pods.append(pod)
    cluster.apply(*pods)
    try:
        for pod in pods:
            cluster.wait_pod(pod["metadata"]["name"], namespace, phases=("Running",), timeout=120)
        server_ip = cluster.get_json("-n", namespace, "pod", "server")["status"]["podIP"]
        yield PolicyPods(namespace, server_ip)
    finally:
        cluster.delete_namespace(namespace)


def _connect(cluster: Cluster, pods: PolicyPods, pod: str) -> str:
    """One TCP connect from `pod` to the server: ok, timeout (dropped) or an error."""
    proc = cluster.exec(
        pod,
        pods.namespace,
        "python",
        "-c",
        CONNECT_PROBE,
        json.dumps([[pods.server_ip, SERVER_PORT]]),
        "2",
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)[pods.server_ip])


def _expect_connect(cluster: Cluster, pods: PolicyPods, expected: dict[str, str]) -> None:
    """Poll until every pod's connect to the server has the expected outcome."""
    start = time.monotonic()
    while True:
        seen = {pod: _connect(cluster, pods, pod) for pod in expected}
        if seen == expected:
            return
        waited = time.monotonic() - start
        assert waited < POLICY_WAIT_S, f"after {waited:.0f}s: {seen}, expected {expected}"
        time.sleep(1)


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _dropped_by_controller(cluster: Cluster) -> float:
    """Packets the controller gave a drop verdict (its Prometheus counter, on loopback)."""
    with urllib.request.urlopen(cluster.facts["netpol_metrics"], timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kube_network_policies_packet_count{") and 'verdict="drop"' in line
    )


def test_network_policy_controller_table_is_installed(cluster: Cluster) -> None:
    family, name = cluster.facts["netpol_table"].split()
    table = subprocess.run(
        ["nft", "list", "table", family, name], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "hook postrouting" in table, table
    assert "set podips-v4" in table, table


def test_network_policy_ingress_deny_then_allow_by_labels(cluster: Cluster, policy_pods: PolicyPods) -> None:
    pods, ns = policy_pods, policy_pods.namespace
    cluster.kubectl("-n", ns, "delete", "networkpolicy", "--all")
    _expect_connect(cluster, pods, {"client": "ok", "other": "ok"})
    dropped_before = _dropped_by_controller(cluster)

    deny = _policy(ns, "default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    cluster.apply(deny)
    _expect_connect(cluster, pods, {"client": "timeout", "other": "timeout"})
    assert _dropped_by_controller(cluster) > dropped_before, "the controller gave no drop verdict"

    allow = _policy(
        ns,
        "allow-client",
        {
            "podSelector": {"matchLabels": {"role": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": SERVER_PORT}],
                }
            ],
        },
    )
    cluster.apply(allow)
    _expect_connect(cluster, pods, {"client": "ok", "other": "timeout"})

    cluster.kubectl("-n", ns, "delete", "networkpolicy", "default-deny-ingress", "allow-client")
    _expect_connect(cluster, pods, {"client": "ok", "other": "ok"})


def test_network_policy_egress_deny_keeps_dns(cluster: Cluster, policy_pods: PolicyPods) -> None:
    pods, ns = policy_pods, policy_pods.namespace
    cluster.kubectl("-n", ns, "delete", "networkpolicy", "--all")
    _expect_connect(cluster, pods, {"client": "ok"})
    egress = _policy(
        ns,
        "client-egress-dns-only",
        {
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Egress"],
            # The stacks' own DNS rule: policies see CoreDNS' port after the Service's DNAT
            # (1053 here), which its named ports match.
            "egress": [DNS_EGRESS],
        },
    )
    cluster.apply(egress)
    # Blocked for the client only: the other pod has no egress policy.
    _expect_connect(cluster, pods, {"client": "timeout", "other": "ok"})

    api_name = f"kubernetes.default.svc.{cluster.cluster_domain}"
    proc = cluster.exec("client", ns, "python", "-c", DNS_PROBE, str(cluster.dns_ip), api_name, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)[api_name]
    assert resolved.get("resolved") == [str(cluster.service_cidr[1])], resolved
    assert resolved["rcode"] == 0 and resolved["id_ok"], resolved

    cluster.kubectl("-n", ns, "delete", "networkpolicy", "client-egress-dns-only")
    _expect_connect(cluster, pods, {"client": "ok", "other": "ok"})
