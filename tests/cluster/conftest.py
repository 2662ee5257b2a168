"""A real single-node Kubernetes on this machine (scripts/bootstrap-cluster, scripts/cluster).

The session fixture `cluster`:
  * runs scripts/bootstrap-cluster (builds what is missing; seconds when everything is built)
    and `scripts/cluster up` (a no-op when the cluster already runs); a failure of either fails
    the test with the script's output, it never skips;
  * yields a `Cluster` with the kubeconfig, the image references to deploy (role -> ref, from
    scripts/build-images), the pod and service ranges, the bridge (host) address and kubectl
    helpers;
  * runs `scripts/cluster down` at the end of the session, only if it started the cluster
    (set MLOPS_CLUSTER_KEEP=1 to leave it running).
Every wait is bounded. The cluster needs root (network namespaces, mounts, iptables).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
BOOTSTRAP_TIMEOUT_S = 75 * 60  # cold: Kubernetes from the Go module proxy and the images
UP_TIMEOUT_S = 10 * 60
DOWN_TIMEOUT_S = 5 * 60


def _state_dir() -> Path:
    return Path(os.environ.get("MLOPS_CLUSTER_STATE_DIR") or REPO / ".tools" / "cluster-state")


def _run_script(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def _check_script(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, (
        f"{what} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-8000:]}"
    )


@dataclass
class PodRun:
    name: str
    namespace: str
    phase: str
    logs: str
    pod: dict[str, Any]


@dataclass
class Cluster:
    kubeconfig: Path
    """File-path form (client certificates referenced by path)."""
    kubeconfig_flat: Path
    """Self-contained form (certificates inlined), e.g. for kubernetes.Provider(kubeconfig=...)."""
    kubectl_path: Path
    images: dict[str, str]
    """role (training, serving, mlflow, registry) -> reference, e.g. localhost/mlops-serve@sha256:..."""
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    bridge_ip: ipaddress.IPv4Address
    """The host's address on the pods' bridge: the only host address pods can reach."""
    dns_ip: ipaddress.IPv4Address
    cluster_domain: str
    egress_chain: str
    storage_class: str
    state_dir: Path
    started_here: bool
    facts: dict[str, Any] = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG and kubectl on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.kubectl_path.parent}:{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert proc.returncode == 0, (
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def get_json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", *args, "-o", "json").stdout))

    def apply(self, *objects: dict[str, Any]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def create_namespace(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        # Pods need the namespace's default ServiceAccount, which a controller adds.
        deadline = time.monotonic() + 30
        while self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"namespace {name}: no default ServiceAccount after 30s"
            time.sleep(0.5)
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def wait_pod(
        self, name: str, namespace: str, phases: Sequence[str] = ("Succeeded", "Failed"), timeout: float = 120
    ) -> dict[str, Any]:
        """Poll until the pod reaches one of `phases`; fail with its description otherwise."""
        deadline = time.monotonic() + timeout
        pod: dict[str, Any] = {}
        while time.monotonic() < deadline:
            proc = self.kubectl("-n", namespace, "get", "pod", name, "-o", "json", check=False)
            if proc.returncode == 0:
                pod = json.loads(proc.stdout)
                if pod.get("status", {}).get("phase") in phases:
                    return pod
            time.sleep(0.5)
        described = self.kubectl("-n", namespace, "describe", "pod", name, check=False).stdout
        raise AssertionError(
            f"pod {namespace}/{name} not in {list(phases)} after {timeout}s:\n{described[-4000:]}"
        )

    def run_pod(
        self,
        name: str,
        namespace: str,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        pull_policy: str = "IfNotPresent",
    ) -> PodRun:
        """Run `command` in a restricted, non-root pod to completion; return its phase and logs."""
        self.apply(pod_manifest(name, namespace, image, command, pull_policy))
        pod = self.wait_pod(name, namespace, timeout=timeout)
        logs = self.kubectl("-n", namespace, "logs", name, check=False).stdout
        return PodRun(name, namespace, pod["status"]["phase"], logs, pod)

    def exec(
        self, pod: str, namespace: str, *argv: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("-n", namespace, "exec", pod, "--", *argv, timeout=timeout, check=False)


def pod_manifest(
    name: str,
    namespace: str,
    image: str,
    command: Sequence[str],
    pull_policy: str = "IfNotPresent",
) -> dict[str, Any]:
    """A pod that satisfies the `restricted` Pod Security Standard, like the stacks' workloads."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "tests"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": pull_policy,
                    "command": list(command),
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    # Small requests: several test pods share the 2-core node with the stacks.
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    assert os.geteuid() == 0, "the cluster tests need root (network namespaces, mounts, iptables)"
    _check_script(
        _run_script([str(SCRIPTS / "bootstrap-cluster")], BOOTSTRAP_TIMEOUT_S), "scripts/bootstrap-cluster"
    )
    status = _run_script([str(SCRIPTS / "cluster"), "status", "--quiet"], 120)
    started_here = status.returncode != 0
    if started_here:
        _check_script(_run_script([str(SCRIPTS / "cluster"), "up"], UP_TIMEOUT_S), "scripts/cluster up")
    state = _state_dir()
    facts = json.loads((state / "cluster.json").read_text())
    images_file = REPO / ".tools" / "cluster-images.json"
    images = json.loads(images_file.read_text()) if images_file.exists() else {}
    handle = Cluster(
        kubeconfig=Path(facts["kubeconfig"]),
        kubeconfig_flat=Path(facts["kubeconfig_flat"]),
        kubectl_path=Path(facts["kubectl"]),
        images=images,
        pod_cidr=ipaddress.IPv4Network(facts["pod_cidr"]),
        service_cidr=ipaddress.IPv4Network(facts["service_cidr"]),
        bridge_ip=ipaddress.IPv4Address(facts["bridge_ip"]),
        dns_ip=ipaddress.IPv4Address(facts["dns_ip"]),
        cluster_domain=facts["cluster_domain"],
        egress_chain=facts["egress_chain"],
        storage_class=facts["storage_class"],
        state_dir=state,
        started_here=started_here,
        facts=facts,
    )
    yield handle
    if started_here and os.environ.get("MLOPS_CLUSTER_KEEP") != "1":
        _check_script(_run_script([str(SCRIPTS / "cluster"), "down"], DOWN_TIMEOUT_S), "scripts/cluster down")
