"""ModelServing: the server Deployment(s), Service, autoscaler, disruption budget, network policy."""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.common import (
    UNRESOLVED,
    ImageSource,
    WorkloadAccess,
    container_security_context,
    image_reference,
    labels,
    object_name,
    pod_security_context,
    resources,
    service_address,
    service_url,
)
from components.rollout import Rollout, probe_budget_seconds

__all__ = [
    "GRPC_PORT",
    "MAX_WORKERS",
    "PORT",
    "READY_WITHIN_SECONDS",
    "ModelServing",
    "ModelServingArgs",
    "ServedRelease",
    "ServiceType",
    "split_replicas",
]

PORT = 8080
SERVICE_PORT = 80
GRPC_PORT = 8081
"""The Open Inference Protocol over gRPC: the container's and the Service's port (named grpc)."""
MAX_WORKERS = 64
"""The server's bound on --workers (model.server.settings.MAX_WORKERS, which the Pulumi program
does not import: nothing outside the server package does)."""
_PROBES: dict[str, dict[str, Any]] = {
    "readinessProbe": {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    },
    "livenessProbe": {
        "httpGet": {"path": "/v2/health/live", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    },
    "startupProbe": {
        "httpGet": {"path": "/v2/health/live", "port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 60,
    },
}
"""The server container's probes."""
READY_WITHIN_SECONDS = probe_budget_seconds(_PROBES)
"""The longest a started server may take to turn ready before its probes restart it."""


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


@dataclass(frozen=True)
class ServedRelease:
    """One release as the server needs it: immutable URI, checksum and registry facts."""

    release_id: pulumi.Input[str]
    """12-hex release identity; the pod label mlops.dev/release."""
    model_uri: pulumi.Input[str]
    """Immutable release folder (holding model/ and release.json); never a moving alias."""
    model_sha256: pulumi.Input[str]
    """Expected checksum of model/ (MLOPS_MODEL_SHA256)."""
    model_version: pulumi.Input[str]
    """Registered model version (annotation mlops.dev/model-version)."""
    gates: pulumi.Input[str]
    """passed | failed (annotation mlops.dev/gates)."""


def split_replicas(total: int, canary_weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for a traffic weight in percent; both at least 1 when a canary runs."""
    if canary_weight == 0:
        return total, 0
    canary = min(max(1, round(total * canary_weight / 100)), max(total - 1, 1))
    return max(total - canary, 1), canary


@dataclass(frozen=True)
class ModelServingArgs(WorkloadAccess):
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: pulumi.Input[str]
    """Namespace of every object."""
    model_name: str
    """Model served; app.kubernetes.io/name and the Service's name."""
    release: ServedRelease
    """The stable release."""
    image: ImageSource
    """The serving image: a reference (prod: by digest) or images/Dockerfile.serve to build."""
    canary: ServedRelease | None = None
    """A candidate release served next to the stable one under the same Service."""
    canary_weight: int = 0
    """Percent of replicas (so of traffic) running the candidate: 1..99 with a canary, else 0."""
    replicas: int = 1
    """Replicas at rollout and the autoscaler's minimum (stable + canary)."""
    max_replicas: int = 3
    """Autoscaler maximum for the stable Deployment."""
    target_cpu_percent: int = 70
    """Average CPU utilisation the autoscaler aims for."""
    cpu_request: str = "250m"
    """CPU request per server."""
    cpu_limit: str = "1"
    """CPU limit per server."""
    memory_request: str = "512Mi"
    """Memory request per server."""
    memory_limit: str = "1Gi"
    """Memory limit per server."""
    max_request_seconds: int = 30
    """The server's per-request time limit (MLOPS_MAX_REQUEST_SECONDS; 504 beyond); the grace
    period exceeds drain + this."""
    drain_seconds: int = 10
    """preStop delay: how long endpoints and load balancers take to stop sending new requests."""
    service_type: ServiceType = ServiceType.CLUSTER_IP
    """Nothing public unless asked."""
    topology_spread: bool = False
    """Spread replicas over zones and nodes."""
    max_unavailable: int = 1
    """PodDisruptionBudget maxUnavailable."""
    monitoring_namespace: str = "monitoring"
    """Pods of this namespace may scrape /metrics."""
    client_cidrs: tuple[str, ...] = ()
    """CIDRs the NetworkPolicy admits besides in-cluster clients: the clients of a NodePort or
    LoadBalancer Service (required with those), which keeps their addresses (externalTrafficPolicy
    Local) and, as a LoadBalancer, admits only them (loadBalancerSourceRanges)."""
    min_ready_seconds: int = 10
    """A new server counts as available only after staying ready this long."""
    progress_deadline_seconds: int = 300
    """A rollout without progress for this long is failed (and so is `pulumi up`, see
    components/rollout.py); longer than a server may take to become available."""
    grpc: bool = True
    """Also serve the Open Inference Protocol over gRPC (port `grpc`, 8081, on the pods and the
    Service); False: the server opens no gRPC port at all."""
    workers: int = 1
    """Server processes per pod (MLOPS_WORKERS), each with its own copy of the model: for pods
    given a core per worker (cpu_limit) and the memory of that many copies."""

    def __post_init__(self) -> None:
        if not isinstance(self.service_type, ServiceType):
            raise ValueError(
                f"service_type must be one of {[t.value for t in ServiceType]}, got {self.service_type!r}"
            )
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas must be >= replicas ({self.replicas}), got {self.max_replicas}")
        if self.canary is None and self.canary_weight != 0:
            raise ValueError(f"canary_weight must be 0 without a canary, got {self.canary_weight}")
        if self.canary is not None and not 1 <= self.canary_weight <= 99:
            raise ValueError(f"canary_weight must be in 1..99 with a canary, got {self.canary_weight}")
        if self.canary is not None and self.replicas < 2:
            raise ValueError(f"a canary needs replicas >= 2 (one per track), got {self.replicas}")
        if not 10 <= self.target_cpu_percent <= 100:
            raise ValueError(f"target_cpu_percent must be in 10..100, got {self.target_cpu_percent}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        from components.network import cidr_list  # network builds on this module

        # Normalised (203.0.113.7 -> 203.0.113.7/32), as ipBlock and loadBalancerSourceRanges want.
        object.__setattr__(self, "client_cidrs", cidr_list(self.client_cidrs, "client_cidrs"))
        if self.service_type is not ServiceType.CLUSTER_IP and not self.client_cidrs:
            raise ValueError(
                f"client_cidrs is required with service_type {self.service_type.value}: the CIDRs "
                "of the clients outside the cluster that may reach the model (nothing public unless asked)"
            )
        self.rollout(1)
        self._check_push_target(self.image)

    def rollout(self, max_pods: int) -> Rollout:
        """A server Deployment's rollout bounds, for up to `max_pods` replicas."""
        return Rollout(
            ready_within_seconds=READY_WITHIN_SECONDS,
            min_ready_seconds=self.min_ready_seconds,
            progress_deadline_seconds=self.progress_deadline_seconds,
            max_pods=max_pods,
        )


class ModelServing(pulumi.ComponentResource):
    """Serves a release (and optionally a canary) with zero-downtime rollouts."""

    endpoint: pulumi.Output[str]
    """In-cluster URL of the Service."""
    grpc_target: pulumi.Output[str] | None
    """The Service's gRPC address (`host:port`, a gRPC channel's target); None with gRPC off."""
    service_name: pulumi.Output[str]
    """The Service's name."""
    deployment_name: pulumi.Output[str]
    """The stable Deployment's name."""
    canary_deployment_name: pulumi.Output[str] | None
    """The canary Deployment's name; None without a canary."""
    release_id: pulumi.Output[str]
    """The stable release, from the Deployment's labels."""
    model_uri: pulumi.Output[str]
    """The stable release's URI, from the Deployment's annotations."""
    image: pulumi.Output[str]
    """The serving image reference."""

    def __init__(self, name: str, args: ModelServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:index:ModelServing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        base = labels(args.model_name, "serving", args.stack)
        selector = {k: base[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}

        self.image, _ = image_reference(self, f"{name}-image", args.image, args.push_target)

        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata={"namespace": args.namespace, "labels": base},
            # The server never talks to the Kubernetes API.
            automount_service_account_token=False,
            opts=child,
        )
        account_name = object_name(account)

        stable_replicas, canary_replicas = split_replicas(args.replicas, args.canary_weight)
        stable_max = max(args.max_replicas - canary_replicas, stable_replicas)  # the autoscaler's
        stable_pods, canary_pods = (stable_replicas, stable_max), (canary_replicas, canary_replicas)
        stable_name = _deployment_name(args.model_name, "stable")
        stable = self._deployment(
            f"{name}-deployment", "stable", args, args.release, stable_pods, account_name, base, selector
        )
        self.canary_deployment_name = None
        if args.canary is not None:
            canary = self._deployment(
                f"{name}-canary", "canary", args, args.canary, canary_pods, account_name, base, selector
            )
            self.canary_deployment_name = object_name(canary)

        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": args.model_name, "namespace": args.namespace, "labels": base},
            spec={
                "type": args.service_type.value,
                # Both tracks: traffic splits by replica count.
                "selector": selector,
                "ports": _service_ports(args.grpc),
                **_exposure(args.service_type, args.client_cidrs),
            },
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-autoscaler",
            metadata={"namespace": args.namespace, "labels": base},
            spec={
                # The Deployment's fixed name, not its output: during a preview of a rollout the
                # Deployment's outputs are unknown, which would show the HPA as changing too.
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": stable_name},
                "minReplicas": stable_replicas,
                "maxReplicas": stable_max,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": args.target_cpu_percent},
                        },
                    }
                ],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget",
            metadata={"namespace": args.namespace, "labels": base},
            spec={"maxUnavailable": args.max_unavailable, "selector": {"matchLabels": selector}},
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata={"namespace": args.namespace, "labels": base},
            spec={
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": _ingress(args),
            },
            opts=child,
        )

        self.service_name = object_name(service)
        self.endpoint = service_url(service)
        self.grpc_target = service_address(service, str(GRPC_PORT)) if args.grpc else None
        self.deployment_name = object_name(stable)
        self.release_id = stable.metadata.apply(lambda m: (m.labels or {})["mlops.dev/release"])
        self.model_uri = stable.metadata.apply(lambda m: (m.annotations or {})["mlops.dev/model-uri"])
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "grpc_target": self.grpc_target,
                "service_name": self.service_name,
                "deployment_name": self.deployment_name,
                "canary_deployment_name": self.canary_deployment_name,
                "release_id": self.release_id,
                "model_uri": self.model_uri,
                "image": self.image,
            }
        )

    def _deployment(
        self,
        resource_name: str,
        track: str,
        args: ModelServingArgs,
        release: ServedRelease,
        replicas: tuple[int, int],
        account_name: pulumi.Output[str],
        base: dict[str, str],
        selector: dict[str, str],
    ) -> k8s.apps.v1.Deployment:
        """One track's Deployment; `replicas`: (at the first rollout, the most it may run)."""
        track_selector = {**selector, "mlops.dev/track": track}
        # A rollout brings up one new pod at a time (maxSurge 1), up to the most the track runs.
        rollout = args.rollout(max_pods=replicas[1])
        release_labels = {**base, "mlops.dev/track": track, "mlops.dev/release": release.release_id}
        annotations = {
            "mlops.dev/model-uri": release.model_uri,
            "mlops.dev/gates": release.gates,
            "mlops.dev/model-version": release.model_version,
        }
        env: list[dict[str, Any]] = [
            {"name": "MLOPS_MODEL_URI", "value": release.model_uri},
            {"name": "MLOPS_MODEL_SHA256", "value": release.model_sha256},
            # Empty when unresolved: the server then reads the version stored beside the release.
            {
                "name": "MLOPS_MODEL_VERSION",
                "value": pulumi.Output.from_input(release.model_version).apply(
                    lambda v: "" if v == UNRESOLVED else v
                ),
            },
            {"name": "MLOPS_PORT", "value": str(PORT)},
            {"name": "MLOPS_GRPC_PORT", "value": str(GRPC_PORT if args.grpc else 0)},
            # After SIGTERM (the preStop sleep is over, nothing new arrives) the server waits for
            # what is in flight: at most the request limit, plus its watchdog's tick.
            {"name": "MLOPS_DRAIN_SECONDS", "value": str(args.max_request_seconds + 2)},
            {"name": "MLOPS_MAX_REQUEST_SECONDS", "value": str(args.max_request_seconds)},
            {"name": "MLOPS_WORKERS", "value": str(args.workers)},
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "HOME", "value": "/tmp"},
        ]
        env += args.s3_env()
        pod_spec: dict[str, Any] = {
            "serviceAccountName": account_name,
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            # Longer than the preStop delay plus the longest request, so none is cut off.
            "terminationGracePeriodSeconds": args.drain_seconds + args.max_request_seconds + 5,
            "containers": [
                {
                    "name": "server",
                    "image": self.image,
                    "command": ["python", "-m", "model.server"],
                    "ports": _container_ports(args.grpc),
                    "env": env,
                    **_PROBES,
                    # Keep serving while endpoints and load balancers drop this pod.
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(args.drain_seconds)]}}},
                    "resources": resources(
                        args.cpu_request, args.memory_request, args.cpu_limit, args.memory_limit
                    ),
                    "securityContext": container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        }
        args.add_pull_secret(pod_spec)
        if args.topology_spread:
            pod_spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": key,
                    "whenUnsatisfiable": when,
                    "labelSelector": {"matchLabels": track_selector},
                    "matchLabelKeys": ["pod-template-hash"],
                }
                for key, when in (
                    ("topology.kubernetes.io/zone", "ScheduleAnyway"),
                    ("kubernetes.io/hostname", "DoNotSchedule"),
                )
            ]
        return k8s.apps.v1.Deployment(
            resource_name,
            metadata={
                "name": _deployment_name(args.model_name, track),
                "namespace": args.namespace,
                "labels": release_labels,
                "annotations": annotations,
            },
            spec={
                "replicas": replicas[0],
                **rollout.spec(),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                # The selector is immutable: it never holds the release.
                "selector": {"matchLabels": track_selector},
                "template": {
                    "metadata": {
                        "labels": release_labels,
                        "annotations": {
                            **annotations,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(PORT),
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": pod_spec,
                },
            },
            # The autoscaler owns spec.replicas after the first rollout (the stable track).
            opts=rollout.options(
                pulumi.ResourceOptions(
                    parent=self, ignore_changes=["spec.replicas"] if track == "stable" else None
                )
            ),
        )


def _container_ports(grpc: bool) -> list[dict[str, Any]]:
    ports = [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    if grpc:
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    return ports


def _service_ports(grpc: bool) -> list[dict[str, Any]]:
    ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    if grpc:
        # h2c: gRPC without TLS, so meshes and gateways pick HTTP/2 for it.
        ports.append(
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return ports


def _ingress(args: ModelServingArgs) -> list[dict[str, Any]]:
    """Only the Service's clients (pods labelled mlops.dev/client-of=<model>, and `client_cidrs`)
    reach the prediction ports; the monitoring namespace's scraper reaches HTTP only (/metrics)."""
    clients: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": {"mlops.dev/client-of": args.model_name}}},
        *({"ipBlock": {"cidr": cidr}} for cidr in args.client_cidrs),
    ]
    scraper = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": args.monitoring_namespace}}
    }
    http = {"port": PORT, "protocol": "TCP"}
    client_ports = [http, {"port": GRPC_PORT, "protocol": "TCP"}] if args.grpc else [http]
    return [{"from": clients, "ports": client_ports}, {"from": [scraper], "ports": [http]}]


def _exposure(service_type: ServiceType, client_cidrs: tuple[str, ...]) -> dict[str, Any]:
    """A NodePort or LoadBalancer Service: only `client_cidrs` may reach it.

    With externalTrafficPolicy Local, a node forwards outside traffic only to its own servers and
    keeps the client's address, which the NetworkPolicy's ipBlocks then see (the default, Cluster,
    rewrites it to a node's). A cloud load balancer also filters by loadBalancerSourceRanges.
    """
    if service_type is ServiceType.CLUSTER_IP:
        return {}
    spec: dict[str, Any] = {"externalTrafficPolicy": "Local"}
    if service_type is ServiceType.LOAD_BALANCER:
        spec["loadBalancerSourceRanges"] = list(client_cidrs)
    return spec


def _deployment_name(model_name: str, track: str) -> str:
    """The Deployment of one track; `<model>-stable` is also the autoscaler's target."""
    return f"{model_name}-{track}"
