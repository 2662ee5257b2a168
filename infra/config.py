"""The one place that reads stack configuration: typed, validated, with errors that say the fix.

`load_settings()` reads through `pulumi.Config` inside the Pulumi program; `load_stack_file()`
reads the same keys from `Pulumi.yaml` defaults plus `Pulumi.<stack>.yaml`, for the `mlops`
CLI, which runs without the engine. Both validate through
the same models, so a key means the same thing everywhere.

Secrets (`SECRET_KEYS`) are scalar string keys set with `pulumi config set --secret`; they are
held as `pydantic.SecretStr` and handed to components as secret Outputs. `load_stack_file`
never decrypts them: it only records whether each one is set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from components.alert_rules import DRIFT_ALERT, DURATION, AlertThresholds
from components.monitoring import MonitoringImages, MonitoringMode
from components.network import ANYWHERE, cidr_list
from components.providers.s3_bucket import Encryption
from components.registry import BackendStore, RegistryMode
from components.rollout import Rollout
from components.serving import MAX_WORKERS, READY_WITHIN_SECONDS
from model.data import S3Access, is_local, split_s3_uri
from model.retrain_trigger import ALERT_NAME, GITHUB_API, REPOSITORY
from model.retrain_trigger import NAMESPACE as _K8S_NAMESPACE
from model.spec import RegistrySettings, TrainingSpec, describe_errors

__all__ = [
    "FLAG_KEYS",
    "NAMESPACE",
    "OBJECT_KEYS",
    "SECRET_KEYS",
    "ArtifactSettings",
    "BackendStore",
    "ConfigError",
    "ContainerRegistrySettings",
    "GrafanaSettings",
    "ImageSettings",
    "KubernetesSettings",
    "MonitoringMode",
    "MonitoringSettings",
    "NetworkSettings",
    "PinnedRelease",
    "RegistryMode",
    "RetrainSettings",
    "ServingSettings",
    "StackSettings",
    "TrackingSettings",
    "TrainingJobSettings",
    "duration_seconds",
    "load_settings",
    "load_stack_file",
    "project_dir",
]

NAMESPACE = "mlops"
PROJECT_FILE = "Pulumi.yaml"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_HOST_NAME = r"^(\*|[A-Za-z0-9*]([A-Za-z0-9*.-]{0,251}[A-Za-z0-9*])?)$"
_ORIGIN = r"^(\*|https?://[A-Za-z0-9*]([A-Za-z0-9*.-]{0,251}[A-Za-z0-9*])?(:[0-9]{1,5})?)$"
PRODUCTION_STACKS = frozenset({"prod"})
"""Stacks held to production rules here (authenticated MLflow, no wildcards), as the policy
pack's digest_required_stacks default holds them to digests and gates."""
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class ConfigError(ValueError):
    """Stack config that is missing or invalid; the message names the file and the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KubernetesSettings(_Frozen):
    """`mlops:kubernetes`: which cluster the explicit provider talks to, or where it renders."""

    kubeconfig: str | None = None
    """Path to (or contents of) a kubeconfig; unset: the provider's default ($KUBECONFIG, ~/.kube/config)."""
    context: str | None = None
    """The kubeconfig context to use; unset: the kubeconfig's current context."""
    namespace: str | None = Field(default=None, pattern=_K8S_NAMESPACE)
    """The stack's namespace; unset: mlops-<stack>."""
    render_dir: str | None = None
    """Write manifests to this folder (the provider's renderYamlToDirectory) instead of calling a cluster."""


class ImageSettings(_Frozen):
    """`mlops:images`: image references to deploy as given; a role left unset is built with pulumi_docker."""

    training: str | None = None
    serving: str | None = None
    mlflow: str | None = None
    registry: str = "docker.io/library/registry:2.8.3"
    """The in-cluster image registry's own image (dev only)."""
    prometheus: str = MonitoringImages.prometheus
    """Bundled monitoring's Prometheus (the 2.53 LTS line; tests use this version's promtool)."""
    alertmanager: str = MonitoringImages.alertmanager
    grafana: str = MonitoringImages.grafana
    """Grafana; the dashboard is built with grafana-foundation-sdk for this version."""
    build_tag: str = "latest"
    """Tag for images built by pulumi_docker; the deployed reference is the pushed digest anyway."""
    platform: str | None = None
    """Build platform, e.g. linux/amd64; unset: the Docker engine's default."""


class ContainerRegistrySettings(_Frozen):
    """`mlops:container_registry`: where images are pushed and pulled from."""

    mode: RegistryMode = RegistryMode.IN_CLUSTER
    server: str | None = None
    """External registry host[:port][/path] (mode external), e.g. ghcr.io/acme."""
    username: str | None = None
    """External registry user; the password is the secret mlops:container_registry_password."""
    node_port: int = Field(default=30500, ge=30000, le=32767)
    """In-cluster mode: the NodePort; nodes and the host reach the registry as localhost:<port>."""
    storage_size: str = Field(default="10Gi", pattern=_QUANTITY)

    @model_validator(mode="after")
    def _server_for_external(self) -> ContainerRegistrySettings:
        if self.mode is RegistryMode.EXTERNAL and not self.server:
            raise ValueError("mode 'external' needs 'server' (e.g. ghcr.io/acme)")
        return self


class TrackingSettings(_Frozen):
    """`mlops:tracking`: the MLflow tracking server in the cluster."""

    backend: BackendStore = BackendStore.SQLITE
    """sqlite: a PVC, one replica, Recreate; external: the secret mlops:tracking_database_url."""
    storage_size: str = Field(default="2Gi", pattern=_QUANTITY)
    replicas: int = Field(default=1, ge=1)
    workers: int | None = Field(default=None, ge=1, le=16)
    """MLflow server workers (~300 MB each); unset: 1 with sqlite, 2 with an external database."""
    node_port: int | None = Field(default=None, ge=30000, le=32767)
    """Expose MLflow on this NodePort (dev), so that `pulumi up` reaches it as localhost:<port>."""
    server_url: str | None = Field(default=None, pattern=r"^https?://")
    """An MLflow server the stack uses instead of deploying one (managed MLflow, or one you run),
    as pods reach it; the backend settings then do not apply."""
    host_tracking_uri: str | None = Field(default=None, pattern=r"^https?://")
    """MLflow URL reachable from where `pulumi up` runs (the registry aliases are moved there);
    unset: server_url, else http://localhost:<node_port>."""
    allowed_hosts: tuple[Annotated[str, Field(pattern=_HOST_NAME)], ...] = ()
    """Host names (any port) MLflow answers to besides its Service's names, localhost and the
    host of host_tracking_uri, e.g. an ingress host; it refuses any other Host header (DNS
    rebinding). Wildcards (*) are refused in prod."""
    cors_allowed_origins: tuple[Annotated[str, Field(pattern=_ORIGIN)], ...] = ()
    """Browser origins (scheme://host[:port]) whose writes MLflow accepts besides localhost and
    host_tracking_uri's; it refuses a cross-origin write from any other. No * in prod."""
    auth: bool | None = None
    """MLflow's basic-auth app: every request needs a user; clients use admin_username and the
    secret mlops:tracking_admin_password. Unset: on in prod for an MLflow the stack deploys
    (which prod cannot turn off), off elsewhere."""
    admin_username: str = Field(default="admin", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    """The basic-auth admin, created with the secret's password when MLflow first starts."""

    @model_validator(mode="after")
    def _consistent(self) -> TrackingSettings:
        if self.backend is BackendStore.SQLITE and self.replicas != 1:
            raise ValueError(f"replicas must be 1 with backend 'sqlite' (got {self.replicas}); allowed: 1")
        if self.server_url and self.node_port is not None:
            raise ValueError(
                f"node_port exposes an in-cluster MLflow; with server_url {self.server_url!r} there is "
                "none: remove node_port"
            )
        if self.server_url and (self.allowed_hosts or self.cors_allowed_origins):
            raise ValueError(
                "allowed_hosts and cors_allowed_origins configure the MLflow the stack deploys; with "
                f"server_url {self.server_url!r} there is none: remove them"
            )
        return self

    @property
    def host_uri(self) -> str | None:
        if self.host_tracking_uri or self.server_url:
            return self.host_tracking_uri or self.server_url
        return f"http://localhost:{self.node_port}" if self.node_port else None

    @property
    def server_hosts(self) -> tuple[str, ...]:
        """allowed_hosts and host_tracking_uri's host, where `pulumi up` reaches MLflow."""
        host = urlsplit(self.host_tracking_uri).hostname if self.host_tracking_uri else None
        return tuple(dict.fromkeys((*self.allowed_hosts, *([host] if host else []))))

    @property
    def server_origins(self) -> tuple[str, ...]:
        """cors_allowed_origins and host_tracking_uri's origin: MLflow's UI served there writes
        with it (a browser sends Origin on same-origin POSTs too)."""
        origin = None
        if self.host_tracking_uri:
            parts = urlsplit(self.host_tracking_uri)
            origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        return tuple(dict.fromkeys((*self.cors_allowed_origins, *([origin] if origin else []))))


class ArtifactSettings(_Frozen):
    """`mlops:artifacts`: the artifact bucket on any S3 API."""

    bucket: str = Field(pattern=_BUCKET)
    create: bool = True
    """True: create it (versioned, public access blocked); False: use an existing bucket."""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    """S3 API endpoint as seen from where `pulumi up` runs; unset means AWS."""
    cluster_endpoint_url: str | None = None
    """S3 API endpoint as seen from pods; unset: endpoint_url."""
    force_destroy: bool = False
    encryption: Encryption = "AES256"
    """Default server-side encryption of the bucket the stack creates or adopts: AES256 (SSE-S3)
    or none. A store that cannot encrypt is reported, not trusted (docs/deploy.md)."""
    tls_only: bool | None = None
    """Deny plain-HTTP requests to the bucket (a bucket policy). Unset: on exactly when every
    endpoint is https:// (AWS S3 is); true with an http:// endpoint is refused."""

    @field_validator("tls_only")
    @classmethod
    def _tls_needs_https(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        plain = [f"{key} {url!r}" for key, url in _plain_http(info.data)]
        if value and plain:
            raise ValueError(
                f"true needs https:// endpoints, got {' and '.join(plain)}: the TLS-only bucket "
                "policy denies every plain-HTTP request, Pulumi's and the pods' included (on "
                "SeaweedFS even removing the policy), which locks the stack out of its bucket; serve "
                "the S3 API over TLS or set tls_only: false"
            )
        return value

    @property
    def enforce_tls(self) -> bool:
        """tls_only as applied: unset means on when no endpoint is plain http:// (AWS S3 is https)."""
        return self.tls_only if self.tls_only is not None else not _plain_http(self.model_dump())


def _plain_http(artifacts: dict[str, Any]) -> list[tuple[str, str]]:
    """The bucket's endpoints that are plain http://, as (key, url)."""
    keys = ("endpoint_url", "cluster_endpoint_url")
    return [(k, url) for k in keys if (url := artifacts.get(k)) and url.lower().startswith("http://")]


class TrainingJobSettings(_Frozen):
    """`mlops:training_job`: limits of the in-cluster training Job."""

    retries: int = Field(default=2, ge=0, le=10)
    """Retries, inside the Job's pod, after a registry or store failure (exit 3); waits 10 s,
    20 s, 40 s, ... between them. Any other failure fails the Job at once."""
    active_deadline_seconds: int = Field(default=3600, ge=60)
    cpu_request: str = Field(default="500m", pattern=_QUANTITY)
    cpu_limit: str = Field(default="2", pattern=_QUANTITY)
    memory_request: str = Field(default="1Gi", pattern=_QUANTITY)
    memory_limit: str = Field(default="2Gi", pattern=_QUANTITY)
    timeout_minutes: int = Field(default=60, ge=1)
    """How long `pulumi up` waits for the Job to complete (the resource's customTimeouts)."""


class PinnedRelease(_Frozen):
    """`mlops:release` / canary: a release already trained and gated elsewhere (promotion writes it)."""

    model_name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    release_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    model_version: str = Field(pattern=r"^[0-9]+$")
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    gates: Literal["passed", "failed"]
    champion_alias: str = Field(default="champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,255}$")
    """The registry alias this stack points at the served version once the rollout succeeded."""


class CanarySettings(_Frozen):
    release: PinnedRelease
    weight: int = Field(ge=1, le=99)
    """Percent of serving replicas (and so of traffic) running the candidate."""


class ServingSettings(_Frozen):
    """`mlops:serving`: the model server's footprint and availability."""

    replicas: int = Field(default=1, ge=1)
    """Replicas at rollout (and the autoscaler's minimum)."""
    max_replicas: int = Field(default=3, ge=1)
    target_cpu_percent: int = Field(default=70, ge=10, le=100)
    cpu_request: str = Field(default="250m", pattern=_QUANTITY)
    cpu_limit: str = Field(default="1", pattern=_QUANTITY)
    memory_request: str = Field(default="512Mi", pattern=_QUANTITY)
    memory_limit: str = Field(default="1Gi", pattern=_QUANTITY)
    max_request_seconds: int = Field(default=30, ge=1)
    """The server's time limit per request (504 beyond); the pod's grace period is longer than
    drain + this."""
    drain_seconds: int = Field(default=10, ge=0, le=300)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    topology_spread: bool = False
    max_unavailable: int = Field(default=1, ge=1)
    """The PodDisruptionBudget's maxUnavailable."""
    canary: CanarySettings | None = None
    client_cidrs: tuple[str, ...] = ()
    """CIDRs of the clients outside the cluster a NodePort or LoadBalancer Service serves (required
    with those): its NetworkPolicy admits exactly these, besides in-cluster clients."""
    min_ready_seconds: int = Field(default=10, ge=1, le=600)
    """A new server counts as available only after staying ready this long."""
    progress_deadline_seconds: int = Field(default=300, ge=60, le=3600)
    """A rollout without progress for this long is failed, and so is `pulumi up`; longer than a
    server may take to become available (its probes' budget plus min_ready_seconds)."""
    grpc: bool = True
    """Serve the Open Inference Protocol over gRPC too (port 8081 on the pods and the Service)."""
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    """Server processes per pod, each with its own copy of the model: raise cpu_limit (a core
    each) and memory_limit with it."""

    @field_validator("client_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return cidr_list(value)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        # One source of truth for the scraper's namespace: the serving NetworkPolicy admits
        # the namespace where MonitoringStack runs.
        if isinstance(data, dict) and "monitoring_namespace" in data:
            raise ValueError(
                "monitoring_namespace moved to mlops:monitoring.namespace (the namespace whose pods "
                "scrape /metrics, where the monitoring stack runs): move the value there"
            )
        return data

    @model_validator(mode="after")
    def _bounds(self) -> ServingSettings:
        if self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= replicas ({self.replicas})")
        if self.service_type != "ClusterIP" and not self.client_cidrs:
            raise ValueError(
                f"service_type {self.service_type} exposes the model outside the cluster: list its "
                "clients' CIDRs in client_cidrs (e.g. client_cidrs: [203.0.113.0/24]), the only "
                "addresses it admits"
            )
        Rollout(READY_WITHIN_SECONDS, self.min_ready_seconds, self.progress_deadline_seconds)
        return self


class NetworkSettings(_Frozen):
    """`mlops:network`: what the NetworkPolicies admit besides the stack's own flows (docs/network.md)."""

    egress_cidrs: tuple[str, ...] = Field(default=ANYWHERE, min_length=1)
    """Where the servers pods reach by host name may be (the artifact store, an external MLflow,
    its database): egress to them is pinned to their ports and to these ranges. Default: anywhere."""
    node_cidrs: tuple[str, ...] = ()
    """The nodes' addresses, from which NodePort traffic forwarded by another node comes: the
    in-cluster image registry (pulls, pushes) and MLflow's NodePort admit them. A pod's own node
    always passes, which is enough on a single node."""
    tracking_client_namespaces: tuple[Annotated[str, Field(pattern=_K8S_NAMESPACE)], ...] = ()
    """Namespaces whose pods may call the stack's MLflow, e.g. the ingress controller serving
    mlops:tracking.host_tracking_uri."""

    @field_validator("egress_cidrs", "node_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return cidr_list(value)


def _duration(value: str) -> str:
    if not re.match(DURATION, value):
        raise ValueError("must be a Prometheus duration such as 30s, 5m, 6h or 1h30m")
    return value


Duration = Annotated[str, AfterValidator(_duration)]
"""A Prometheus duration: what alert `for:`, scrape intervals and retention take."""


def _label_map(value: dict[str, str]) -> dict[str, str]:
    for key, label in value.items():
        if not re.match(_LABEL_KEY, key) or not re.match(_LABEL_VALUE, label):
            raise ValueError(
                f"{key}: {label!r} is not a Kubernetes label (key [prefix/]name, value <= 63 characters)"
            )
    return value


def duration_seconds(value: str) -> float:
    """Seconds in a Prometheus duration such as 1h30m (validated by the settings' pattern)."""
    return sum(
        int(number) * _DURATION_UNITS[unit] for number, unit in re.findall(r"([0-9]+)(ms|[ywdhms])", value)
    )


def _positive_duration(value: str, key: str) -> str:
    if duration_seconds(value) <= 0:
        raise ValueError(f"{key} must be longer than 0, e.g. 30s, 5m, 6h")
    return value


class RetrainSettings(_Frozen):
    """`mlops:monitoring.retrain`: drift alerts open a retraining pull request (docs/retraining.md).

    Alertmanager posts the alerts named in `alert_names` to the retrain trigger, which asks
    GitHub (`repository_dispatch`) for a workflow that points the dev stack's dataset at the
    newest version under `dataset_prefix`. Tokens: the secrets mlops:retrain_github_token and
    mlops:retrain_webhook_token.
    """

    enabled: bool = False
    github_api_url: str = GITHUB_API
    """GitHub's REST API (GitHub Enterprise: https://<host>/api/v3)."""
    repository: str | None = None
    """owner/name of the repository whose retrain workflow runs; required when enabled."""
    min_interval: Duration = "6h"
    """At most one retrain dispatch per model within this Prometheus duration."""
    alert_names: tuple[str, ...] = Field(default=(DRIFT_ALERT,), min_length=1)
    """Alerts that trigger a retrain; the rest go to the default receiver only."""
    dataset_prefix: str | None = None
    """Where new dataset versions land (s3://bucket/prefix/ or a folder); required when enabled."""

    @field_validator("min_interval")
    @classmethod
    def _interval_positive(cls, value: str) -> str:
        return _positive_duration(value, "min_interval")

    @field_validator("github_api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+", value):
            raise ValueError("must be https://<host>[/path] (GitHub Enterprise: https://<host>/api/v3)")
        return value

    @field_validator("repository")
    @classmethod
    def _owner_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(REPOSITORY, value):
            raise ValueError("must be <owner>/<name> of a GitHub repository, e.g. acme/mlops")
        return value

    @field_validator("alert_names")
    @classmethod
    def _alert_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(ALERT_NAME, name):
                raise ValueError(f"alert name {name!r} is not a valid Prometheus alert name")
        return value

    @field_validator("dataset_prefix")
    @classmethod
    def _dataset_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("sklearn:"):
            raise ValueError(
                "names a bundled dataset, which has no versions; use s3://<bucket>/<prefix>/ or a folder"
            )
        if value.startswith("s3://"):
            bucket, _ = split_s3_uri(value)
            if not re.match(_BUCKET, bucket):
                raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        elif "://" in value.removeprefix("file://"):
            raise ValueError("allowed dataset locations: s3://<bucket>/<prefix>/ or a folder")
        elif not value.removeprefix("file://"):
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> RetrainSettings:
        if self.enabled:
            missing = [k for k in ("repository", "dataset_prefix") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"enabled retraining needs {' and '.join(missing)} "
                    "(e.g. repository: acme/mlops, dataset_prefix: s3://datasets/breast-cancer/)"
                )
        return self

    @property
    def min_interval_seconds(self) -> int:
        return int(duration_seconds(self.min_interval))


class GrafanaSettings(_Frozen):
    """`mlops:monitoring.grafana`: bundled mode's Grafana with the model dashboard."""

    enabled: bool = True
    """Needs the secret mlops:grafana_admin_password."""


class MonitoringSettings(_Frozen):
    """`mlops:monitoring`: Prometheus scraping the model servers, alert rules, Grafana, retraining."""

    enabled: bool = False
    mode: MonitoringMode = MonitoringMode.BUNDLED
    namespace: str = Field(default="monitoring", pattern=_K8S_NAMESPACE)
    """Where the monitoring stack runs; the serving NetworkPolicy admits scrapes from its pods."""
    scrape_interval: Duration = "15s"
    retention: Duration = "15d"
    """Prometheus --storage.tsdb.retention.time."""
    storage_size: str = Field(default="10Gi", pattern=_QUANTITY)
    """Prometheus' PersistentVolumeClaim."""
    thresholds: AlertThresholds = AlertThresholds()
    """When the alerts fire (docs/monitoring.md lists them); pydantic checks the types and
    AlertThresholds the ranges, so the stack and the components accept the same values."""
    grafana: GrafanaSettings = GrafanaSettings()
    retrain: RetrainSettings = RetrainSettings()
    operator_labels: Annotated[dict[str, str], AfterValidator(_label_map)] = Field(default_factory=dict)
    """Operator mode: labels the operator's Prometheus selects PodMonitors and PrometheusRules by
    (kube-prometheus-stack: {release: <helm release name>})."""

    @field_validator("scrape_interval", "retention")
    @classmethod
    def _durations_positive(cls, value: str, info: ValidationInfo) -> str:
        return _positive_duration(value, str(info.field_name))


class StackSettings(BaseModel):
    """Everything the program and the CLI need to know about one stack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stack: str
    training: TrainingSpec | None = None
    """The release to train in this stack; None for stacks that only serve a pinned release."""
    registry: RegistrySettings = RegistrySettings()
    """Tracking and artifact locations for local runs (`mlops release --stack`)."""
    release: PinnedRelease | None = None
    """The release served by a stack that does not train."""
    kubernetes: KubernetesSettings = KubernetesSettings()
    images: ImageSettings = ImageSettings()
    container_registry: ContainerRegistrySettings = ContainerRegistrySettings()
    tracking: TrackingSettings = TrackingSettings()
    artifacts: ArtifactSettings | None = None
    training_job: TrainingJobSettings = TrainingJobSettings()
    serving: ServingSettings = ServingSettings()
    network: NetworkSettings = NetworkSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    protect: bool = False
    """`mlops:protect`: give the stack's state the `protect` option (prod sets it): the bucket,
    every PersistentVolumeClaim and the Secret with MLflow's database URL. Pulumi then refuses to
    delete or replace them; docs/deploy.md (Protected state) says how to tear down on purpose."""
    # Secrets: SecretStr never prints; components receive them as secret Outputs.
    tracking_database_url: SecretStr | None = None
    tracking_admin_password: SecretStr | None = None
    container_registry_password: SecretStr | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    grafana_admin_password: SecretStr | None = None
    retrain_github_token: SecretStr | None = None
    retrain_webhook_token: SecretStr | None = None

    def missing_secrets(self) -> list[str]:
        """Secrets this stack needs but does not have, each with the command that sets it.

        Checked inside the program only (`load_settings`), where the engine has decrypted the
        stack's secrets; the YAML reader cannot see them and does not judge them.
        """
        problems = []
        if self.container_registry.mode is RegistryMode.EXTERNAL and (
            self.container_registry.username and self.container_registry_password is None
        ):
            problems.append(
                "mlops:container_registry.username is set but the password is not: run "
                "`pulumi config set --secret mlops:container_registry_password <password>`"
            )
        if (
            self.tracking.backend is BackendStore.EXTERNAL
            and not self.tracking.server_url
            and self.tracking_database_url is None
        ):
            problems.append(
                "mlops:tracking.backend is 'external' but mlops:tracking_database_url is not set: run "
                "`pulumi config set --secret mlops:tracking_database_url postgresql://USER:PASS@HOST/DB`"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            problems.append(
                "set both mlops:s3_access_key_id and mlops:s3_secret_access_key "
                "(`pulumi config set --secret ...`), or neither"
            )
        return problems + self._missing_tracking_password() + self._missing_monitoring_secrets()

    def _missing_tracking_password(self) -> list[str]:
        if not self.tracking_auth:
            return []
        key = "mlops:tracking_admin_password"
        fix = f'run `pulumi config set --secret {key} "$(openssl rand -base64 24)"`'
        why = f"{self.stack} requires it" if self.tracking.auth is None else "mlops:tracking.auth is true"
        if self.tracking_admin_password is None:
            return [f"MLflow authentication is on ({why}) but {key} is not set: {fix}"]
        password = _revealed(self.tracking_admin_password)
        if password is not None and len(password) < 12:
            return [f"{key} is shorter than 12 characters, MLflow's minimum: {fix}"]
        return []

    @property
    def tracking_auth(self) -> bool:
        """Whether MLflow requires a user, and clients send the admin's credentials."""
        if self.tracking.auth is not None:
            return self.tracking.auth
        return self.stack in PRODUCTION_STACKS and not self.tracking.server_url

    def _missing_monitoring_secrets(self) -> list[str]:
        monitoring = self.monitoring
        needed = []
        if monitoring.enabled and monitoring.grafana.enabled and monitoring.mode is MonitoringMode.BUNDLED:
            needed.append(("grafana_admin_password", "mlops:monitoring.grafana.enabled is true", "PASSWORD"))
        if monitoring.enabled and monitoring.retrain.enabled:
            needed.append(
                ("retrain_github_token", "mlops:monitoring.retrain.enabled is true", "GITHUB_TOKEN")
            )
            needed.append(
                (
                    "retrain_webhook_token",
                    "mlops:monitoring.retrain.enabled is true",
                    "$(openssl rand -hex 32)",
                )
            )
        problems = [
            f"{why} but mlops:{key} is not set: run `pulumi config set --secret mlops:{key} {example}`"
            for key, why, example in needed
            if getattr(self, key) is None
        ]
        webhook = _revealed(self.retrain_webhook_token)
        if monitoring.enabled and monitoring.retrain.enabled and webhook is not None and len(webhook) < 16:
            problems.append(
                "mlops:retrain_webhook_token is shorter than 16 characters: set a random one with "
                '`pulumi config set --secret mlops:retrain_webhook_token "$(openssl rand -hex 32)"`'
            )
        return problems

    @property
    def namespace(self) -> str:
        return self.kubernetes.namespace or f"mlops-{self.stack}"

    @property
    def renders_only(self) -> bool:
        """True when the provider writes manifests instead of calling a cluster."""
        return self.kubernetes.render_dir is not None

    @property
    def champion_alias(self) -> str | None:
        """The alias the stack moves to the served version after its rollout, if any.

        A training stack moves it only for blocking gates with promotion on (a release that
        failed non-blocking gates must not become champion); render mode never does, since
        nothing is rolled out and awaited.
        """
        if self.renders_only:
            return None
        if self.training is not None:
            gates = self.training.gates
            return gates.champion_alias if gates.promote and gates.blocking else None
        return self.release.champion_alias if self.release is not None else None

    @property
    def dataset_access(self) -> S3Access:
        """How the program reads an s3:// dataset: the stack's endpoint and credentials."""
        # The YAML reader never decrypts secrets (it holds placeholders): ambient credentials then.
        key_id, secret = _revealed(self.s3_access_key_id), _revealed(self.s3_secret_access_key)
        if key_id is None or secret is None:
            key_id = secret = None
        artifacts = self.artifacts
        return S3Access(
            endpoint_url=artifacts.endpoint_url if artifacts else None,
            access_key_id=key_id,
            secret_access_key=secret,
            region=artifacts.region if artifacts else None,
        )

    def cluster_problems(self) -> list[str]:
        """What the program cannot deploy, each with the fix (the YAML reader does not judge these)."""
        problems = []
        if self.training is not None and is_local(self.training.dataset):
            problems.append(
                f"mlops:training.dataset: {self.training.dataset!r} is a path on this machine, which "
                "the training Job in the cluster cannot read; use s3://<bucket>/<key> (read with "
                "mlops:artifacts.endpoint_url and the stack's S3 credentials) or a bundled "
                "sklearn:<name> dataset"
            )
        if self.champion_alias is not None and self.tracking.host_uri is None:
            problems.append(
                f"the stack moves the registry alias {self.champion_alias!r} after each rollout, "
                "which needs an MLflow URL reachable from where `pulumi up` runs: set "
                "mlops:tracking.host_tracking_uri (or mlops:tracking.node_port for an in-cluster "
                "MLflow), or turn promotion off (mlops:training.gates.promote: false)"
            )
        return problems

    @field_validator("images")
    @classmethod
    def _digests_well_formed(cls, value: ImageSettings) -> ImageSettings:
        for role in ("training", "serving", "mlflow", "registry", "prometheus", "alertmanager", "grafana"):
            ref = getattr(value, role)
            if ref and "@" in ref and not _DIGEST.match(ref.split("@", 1)[1]):
                raise ValueError(f"{role}: digest in {ref!r} is not sha256:<64 hex digits>")
        return value

    @model_validator(mode="after")
    def _production_tracking(self) -> StackSettings:
        if self.stack not in PRODUCTION_STACKS:
            return self
        tracking = self.tracking
        if tracking.auth is False and not tracking.server_url:
            raise ValueError(
                f"mlops:tracking.auth: {self.stack} must not run MLflow without authentication: remove "
                "`auth: false` (and set the secret mlops:tracking_admin_password)"
            )
        for key in ("allowed_hosts", "cors_allowed_origins"):
            if wild := [v for v in getattr(tracking, key) if "*" in v]:
                raise ValueError(
                    f"mlops:tracking.{key}: {wild} has a wildcard, which {self.stack} refuses: list each "
                    "name exactly"
                )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> StackSettings:
        if (self.training is None) == (self.release is None):
            raise ValueError(
                "set exactly one of mlops:training (the stack trains) or mlops:release "
                "(the stack serves a pinned release)"
            )
        if self.artifacts is None:
            raise ValueError(
                "mlops:artifacts is required: add `mlops:artifacts: {bucket: <name>}` to the stack file"
            )
        root = self.registry.artifact_root or ""
        if root.startswith("s3://") and root[5:].split("/", 1)[0] != self.artifacts.bucket:
            raise ValueError(
                f"mlops:registry.artifact_root {root!r} names a different bucket than "
                f"mlops:artifacts.bucket {self.artifacts.bucket!r}"
            )
        served = (
            self.training.model_name if self.training else self.release.model_name if self.release else ""
        )
        if self.serving.canary and self.serving.canary.release.model_name != served:
            raise ValueError(
                f"mlops:serving.canary.release.model_name {self.serving.canary.release.model_name!r} "
                f"differs from the served model {served!r}"
            )
        return self


# Object keys (without the namespace) and the settings field each one fills.
OBJECT_KEYS = (
    "training",
    "registry",
    "release",
    "kubernetes",
    "images",
    "container_registry",
    "tracking",
    "artifacts",
    "training_job",
    "serving",
    "network",
    "monitoring",
)
FLAG_KEYS = ("protect",)
"""Scalar boolean keys: `mlops:protect: true` in the stack file."""
SECRET_KEYS = (
    "tracking_database_url",
    "tracking_admin_password",
    "container_registry_password",
    "s3_access_key_id",
    "s3_secret_access_key",
    "grafana_admin_password",
    "retrain_github_token",
    "retrain_webhook_token",
)


def project_dir(start: Path | None = None) -> Path:
    """The folder holding Pulumi.yaml, searching upwards from `start` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ConfigError(f"no {PROJECT_FILE} found in {here} or any parent folder")


def _build(stack: str, raw: dict[str, Any], source: str) -> StackSettings:
    values: dict[str, Any] = {"stack": stack}
    for key in OBJECT_KEYS:
        # An empty object means "unset", so that a `default: {}` declaration changes nothing.
        if raw.get(key) is not None and raw.get(key) != {}:
            values[key] = raw[key]
    for key in (*FLAG_KEYS, *SECRET_KEYS):
        if raw.get(key) not in (None, ""):
            values[key] = raw[key]
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Field errors as `mlops:<key>.<path>: ...`; whole-stack errors carry their own key names."""
    lines = []
    for error in exc.errors():
        if error["loc"]:
            single = ValidationError.from_exception_data(exc.title, [error])  # type: ignore[list-item]
            lines.append(describe_errors(single, NAMESPACE + ":"))
        else:
            lines.append(error["msg"].removeprefix("Value error, "))
    return "; ".join(lines)


def load_settings() -> StackSettings:
    """Read and validate this stack's config inside the Pulumi program."""
    import pulumi
    import pulumi.runtime

    config = pulumi.Config(NAMESPACE)
    stack = pulumi.get_stack()
    raw: dict[str, Any] = {}
    for key in OBJECT_KEYS:
        try:
            raw[key] = config.get_object(key)
        except Exception as exc:  # a value that is not JSON/YAML for an object key
            raise ConfigError(f"Pulumi.{stack}.yaml: {NAMESPACE}:{key}: {exc}") from None
    for key in (*FLAG_KEYS, *SECRET_KEYS):
        # Read the raw value (not config.get, which warns for secrets); it becomes a SecretStr
        # here and a secret Output in the components. Flags ("true"/"false") are parsed by the model.
        raw[key] = pulumi.runtime.get_config(f"{NAMESPACE}:{key}")
    settings = _build(stack, raw, f"Pulumi.{stack}.yaml")
    if problems := settings.missing_secrets() + settings.cluster_problems():
        raise ConfigError(f"Pulumi.{stack}.yaml: " + "; ".join(problems))
    return settings


def load_stack_file(
    stack: str, start: Path | None = None, assume_secrets: bool = False, text: str | None = None
) -> StackSettings:
    """Read and validate a stack's config from its YAML files, without the Pulumi engine.

    Secret values (`secure:` ciphertext) are never decrypted: a set secret becomes a
    placeholder, so validation sees it as present. `assume_secrets=True` (the render: a
    credential-free view) also fills unset secrets with the placeholder. `text` validates that
    content as the stack file instead of the file on disk (before it is written).
    """
    root = project_dir(start)
    raw = secret_placeholders(read_stack_config(stack, root, text), assume_secrets)
    return _build(stack, raw, f"Pulumi.{stack}.yaml")


def secret_placeholders(raw: dict[str, Any], assume_secrets: bool) -> dict[str, Any]:
    """Replace secret values (set ones, or all with `assume_secrets`) by SECRET_PLACEHOLDER."""
    out = dict(raw)
    for key in SECRET_KEYS:
        if assume_secrets or out.get(key) not in (None, ""):
            out[key] = SECRET_PLACEHOLDER
    return out


SECRET_PLACEHOLDER = "[secret]"


def _revealed(secret: SecretStr | None) -> str | None:
    value = secret.get_secret_value() if secret is not None else ""
    return None if value in ("", SECRET_PLACEHOLDER) else value


def read_stack_config(stack: str, root: Path, text: str | None = None) -> dict[str, Any]:
    """The `mlops:` keys of a stack: project defaults overlaid with the stack file (raw values)."""
    stack_file = root / f"Pulumi.{stack}.yaml"
    if text is None and not stack_file.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml")
        )
        raise ConfigError(f"{stack_file} does not exist; stacks here: {', '.join(known) or 'none'}")
    raw = _project_defaults(root / PROJECT_FILE)
    stack_config = _read_yaml(stack_file, text).get("config") or {}
    for full_key, value in stack_config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace == NAMESPACE:
            raw[key] = value
    return raw


def _project_defaults(project_file: Path) -> dict[str, Any]:
    declared = _read_yaml(project_file).get("config") or {}
    defaults: dict[str, Any] = {}
    for full_key, declaration in declared.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != NAMESPACE:
            continue
        if isinstance(declaration, dict) and ("default" in declaration or "value" in declaration):
            defaults[key] = declaration.get("value", declaration.get("default"))
        elif not isinstance(declaration, dict):
            defaults[key] = declaration
    return defaults


def _read_yaml(path: Path, text: str | None = None) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text() if text is None else text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must hold a mapping")
    return data
