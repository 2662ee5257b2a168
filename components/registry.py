"""ModelRegistry: MLflow tracking server, backend store, artifact bucket and image registry."""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.common import (
    S3_CREDENTIAL_KEYS,
    ImageSource,
    PushTarget,
    container_security_context,
    image_pull_secret,
    image_reference,
    labels,
    object_name,
    pod_security_context,
    protected,
    resources,
    secret_env,
    service_url,
    volume_claim,
)
from components.providers.s3_bucket import ENCRYPTIONS, Encryption
from components.rollout import Rollout, probe_budget_seconds

__all__ = [
    "AUTH_CONFIG_PATH",
    "SERVER_ENV",
    "TRACKING_CREDENTIAL_KEYS",
    "BackendStore",
    "ModelRegistry",
    "ModelRegistryArgs",
    "RegistryMode",
    "auth_secret_data",
    "mlflow_server_args",
    "service_hosts",
]

MLFLOW_PORT = 5000
REGISTRY_PORT = 5000
MLFLOW_SERVICE = "mlflow"
IMAGE_REGISTRY_SERVICE = "image-registry"
MLFLOW_DATA = "mlflow-data"
IMAGE_REGISTRY_DATA = "image-registry-data"

SERVER_ENV = {
    # MLflow 3 starts a job runner with seven consumer processes (~220 MB each, 1.5 GB in all)
    # for its GenAI jobs by default; a model registry needs none of them.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
"""Environment of every MLflow server the toolkit starts (the Deployment and the tests' servers)."""
AUTH_DIR = "/etc/mlflow-auth"
AUTH_CONFIG_FILE = "basic_auth.ini"
AUTH_CONFIG_PATH = f"{AUTH_DIR}/{AUTH_CONFIG_FILE}"
AUTH_ENV_KEYS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
"""Keys of the server's auth Secret read into its environment (beside the mounted config file)."""
TRACKING_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
"""Keys of the clients' credentials Secret, named as MLflow's client reads them from the env."""


def service_hosts(namespace: str) -> tuple[str, ...]:
    """Host names the in-cluster MLflow answers to: its Service's names and loopback (NodePort,
    port-forward). Exact names, no wildcards: `mlflow.*` would also admit mlflow.attacker.example."""
    svc = f"{MLFLOW_SERVICE}.{namespace}.svc"
    return (
        MLFLOW_SERVICE,
        f"{MLFLOW_SERVICE}.{namespace}",
        svc,
        f"{svc}.cluster.local",
        "localhost",
        "127.0.0.1",
    )


def mlflow_server_args(
    *,
    backend_store_uri: str,
    artifacts: str,
    allowed_hosts: Sequence[str],
    cors_allowed_origins: Sequence[str] = (),
    auth: bool = False,
    serve_artifacts: bool = False,
    workers: int = 1,
    host: str = "0.0.0.0",
    port: int = MLFLOW_PORT,
) -> list[str]:
    """`mlflow server` arguments, as the Deployment runs them and the tests start them.

    MLflow's security middleware stays on: `allowed_hosts` (names, with any port) are the only
    Host headers it answers (DNS-rebinding protection) and `cors_allowed_origins` (besides
    localhost) the only browser origins whose writes it accepts. `auth` runs the basic-auth app.
    `artifacts` is the default artifact root (clients write to it themselves), or with
    `serve_artifacts` the destination the server proxies uploads and downloads to.
    """
    args = [
        f"--host={host}",
        f"--workers={workers}",
        f"--port={port}",
        f"--backend-store-uri={backend_store_uri}",
    ]
    if serve_artifacts:
        args += ["--serve-artifacts", f"--artifacts-destination={artifacts}"]
    else:
        args += ["--no-serve-artifacts", f"--default-artifact-root={artifacts}"]
    # MLflow matches the Host header, port included, with fnmatch: each name with and without one.
    args.append("--allowed-hosts=" + ",".join(p for h in allowed_hosts for p in (h, f"{h}:*")))
    if cors_allowed_origins:
        args.append("--cors-allowed-origins=" + ",".join(cors_allowed_origins))
    if auth:
        args.append("--app-name=basic-auth")
    return args


def auth_secret_data(admin_username: str, admin_password: str, database_uri: str) -> dict[str, str]:
    """The basic-auth app's Secret: its config file (AUTH_CONFIG_FILE) and AUTH_ENV_KEYS.

    MLflow creates the admin user with this password on its first start against an empty user
    store and ignores it afterwards; the CSRF key of its sign-up form is derived from the
    password, so that every worker and replica shares it without another secret to set.
    """
    for what, value in (("admin_username", admin_username), ("database_uri", database_uri)):
        if not value or any(c in value for c in "\r\n"):
            raise ValueError(f"{what} must be one non-empty line, got {len(value)} characters")
    config = "\n".join(
        [
            "[mlflow]",
            # Every request needs a user; any user reads, writing needs a grant (or admin).
            "default_permission = READ",
            # configparser interpolates %: a URL-encoded password holds some.
            f"database_uri = {database_uri.replace('%', '%%')}",
            f"admin_username = {admin_username.replace('%', '%%')}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]
    )
    csrf_key = hmac.new(admin_password.encode(), b"mlops mlflow flask secret key", hashlib.sha256).hexdigest()
    return {
        AUTH_CONFIG_FILE: config,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": csrf_key,
    }


class BackendStore(StrEnum):
    """Where MLflow keeps runs and model versions."""

    SQLITE = "sqlite"
    """SQLite on a PersistentVolumeClaim: one replica, Recreate strategy (dev)."""
    EXTERNAL = "external"
    """An external database whose URL is a secret (prod)."""


class RegistryMode(StrEnum):
    """Where images are pushed and pulled from."""

    IN_CLUSTER = "in-cluster"
    """A registry Deployment with a PVC, exposed on a NodePort as localhost:<port> (dev)."""
    EXTERNAL = "external"
    """An external OCI registry with credentials as secrets (prod)."""


@dataclass(frozen=True)
class ModelRegistryArgs:
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: pulumi.Input[str]
    """Namespace for every object."""
    bucket_name: str
    """The artifact bucket (S3 API); releases live under s3://<bucket>/<model>/<release_id>/."""
    mlflow_image: ImageSource
    """The MLflow server image: a reference, or images/Dockerfile.mlflow to build."""
    create_bucket: bool = True
    """Create the bucket (versioned, public access blocked) or use an existing one."""
    bucket_region: str = "us-east-1"
    """Bucket region (AWS); S3-compatible stores usually ignore it."""
    s3_endpoint_url: str | None = None
    """S3 endpoint as seen from where `pulumi up` runs; None means AWS."""
    s3_cluster_endpoint_url: str | None = None
    """S3 endpoint as seen from pods; None: s3_endpoint_url."""
    s3_access_key_id: pulumi.Input[str] | None = None
    """Secret; None: pods use ambient credentials (e.g. IRSA / workload identity)."""
    s3_secret_access_key: pulumi.Input[str] | None = None
    """Secret; set together with s3_access_key_id."""
    force_destroy_bucket: bool = False
    """Let `pulumi destroy` delete a non-empty bucket (never in prod)."""
    bucket_encryption: Encryption = "AES256"
    """The bucket's default server-side encryption: AES256 (SSE-S3) or none (see S3Bucket)."""
    bucket_tls_only: bool = False
    """Deny plain-HTTP requests to the bucket (a bucket policy); needs https:// S3 endpoints."""
    protect: bool = False
    """Give the state `protect` (prod): the bucket, MLflow's SQLite PVC or its database Secret and
    the image registry's PVC; Pulumi then refuses to delete or replace them."""
    backend: BackendStore = BackendStore.SQLITE
    """MLflow backend store."""
    database_url: pulumi.Input[str] | None = None
    """Secret database URL, required with BackendStore.EXTERNAL."""
    tracking_storage_size: str = "2Gi"
    """PVC size for the SQLite backend."""
    tracking_replicas: int = 1
    """MLflow replicas; must be 1 with SQLite."""
    tracking_workers: int | None = None
    """MLflow server worker processes (~300 MB each); None: 1 with SQLite (writes serialise
    anyway), 2 with an external database. MLflow's own default of 4 needs more than 1 GiB."""
    tracking_node_port: int | None = None
    """Expose MLflow on this NodePort (dev) so that `pulumi up` reaches it; None: ClusterIP only."""
    tracking_server_url: str | None = None
    """An MLflow server outside the stack (managed, or run elsewhere), as pods reach it: no MLflow
    is deployed and the backend settings are not used."""
    tracking_allowed_hosts: tuple[str, ...] = ()
    """Host names MLflow answers to besides `service_hosts` (e.g. an ingress host); MLflow refuses
    a request naming any other (DNS-rebinding protection)."""
    tracking_cors_origins: tuple[str, ...] = ()
    """Browser origins (scheme://host[:port]) whose writes MLflow accepts besides localhost."""
    tracking_auth: bool = False
    """Run MLflow's basic-auth app (every request needs a user), and give clients the admin's
    credentials (`tracking_secret_name`); with tracking_server_url, only the latter."""
    tracking_admin_username: str = "admin"
    """The basic-auth admin user."""
    tracking_admin_password: pulumi.Input[str] | None = None
    """Secret, required with tracking_auth: the admin's password, set when MLflow first starts."""
    registry_mode: RegistryMode = RegistryMode.IN_CLUSTER
    """In-cluster registry (dev) or an external one (prod)."""
    registry_server: str | None = None
    """External registry host[/path], required with RegistryMode.EXTERNAL."""
    registry_username: pulumi.Input[str] | None = None
    """External registry user."""
    registry_password: pulumi.Input[str] | None = None
    """Secret external registry password or token."""
    registry_node_port: int = 30500
    """In-cluster registry NodePort: nodes pull from, and the host pushes to, localhost:<port>."""
    registry_storage_size: str = "10Gi"
    """PVC size of the in-cluster registry."""
    registry_image: str = "docker.io/library/registry:2.8.3"
    """Image of the in-cluster registry."""
    extra_labels: dict[str, str] = field(default_factory=dict)
    """Added to every object's labels."""

    def __post_init__(self) -> None:
        if not isinstance(self.backend, BackendStore):
            raise ValueError(
                f"backend must be one of {[b.value for b in BackendStore]}, got {self.backend!r}"
            )
        if not isinstance(self.registry_mode, RegistryMode):
            raise ValueError(
                f"registry_mode must be one of {[m.value for m in RegistryMode]}, got {self.registry_mode!r}"
            )
        if self.backend is BackendStore.SQLITE and self.tracking_replicas != 1:
            raise ValueError(f"tracking_replicas must be 1 with backend sqlite, got {self.tracking_replicas}")
        if self.tracking_replicas < 1:
            raise ValueError(f"tracking_replicas must be >= 1, got {self.tracking_replicas}")
        if self.tracking_workers is not None and not 1 <= self.tracking_workers <= 16:
            raise ValueError(f"tracking_workers must be in 1..16, got {self.tracking_workers}")
        if (
            self.backend is BackendStore.EXTERNAL
            and self.database_url is None
            and not self.tracking_server_url
        ):
            raise ValueError("database_url is required with backend external (a secret), got None")
        if self.tracking_server_url and self.tracking_node_port is not None:
            raise ValueError(
                f"tracking_node_port ({self.tracking_node_port}) exposes an in-cluster MLflow; "
                f"there is none with tracking_server_url {self.tracking_server_url!r}"
            )
        if self.registry_mode is RegistryMode.EXTERNAL and not self.registry_server:
            raise ValueError(
                f"registry_server is required with registry_mode external, got {self.registry_server!r}"
            )
        for port_name in ("registry_node_port", "tracking_node_port"):
            port = getattr(self, port_name)
            if port is not None and not 30000 <= port <= 32767:
                raise ValueError(f"{port_name} must be in 30000..32767, got {port}")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("s3_access_key_id and s3_secret_access_key must be given together or not at all")
        if self.bucket_encryption not in ENCRYPTIONS:
            raise ValueError(
                f"bucket_encryption must be one of {list(ENCRYPTIONS)}, got {self.bucket_encryption!r}"
            )
        endpoints = (self.s3_endpoint_url, self.s3_cluster_endpoint_url)
        plain = [u for u in endpoints if u and u.lower().startswith("http://")]
        if self.bucket_tls_only and plain:
            raise ValueError(
                f"bucket_tls_only needs https:// S3 endpoints, got {plain[0]!r}: the TLS-only bucket "
                "policy would deny every plain-HTTP request, Pulumi's and the pods' included"
            )
        if self.tracking_auth and self.tracking_admin_password is None:
            raise ValueError("tracking_admin_password is required with tracking_auth (a secret), got None")


class ModelRegistry(pulumi.ComponentResource):
    """MLflow on Kubernetes with its backend store, the artifact bucket and the image registry."""

    tracking_uri: pulumi.Output[str]
    """In-cluster MLflow URI (http://mlflow.<ns>.svc.cluster.local:5000), from the Service."""
    artifact_root: pulumi.Output[str]
    """s3://<bucket>: from the bucket resource when created."""
    registry_server: pulumi.Output[str]
    """Where images are pushed and pulled: localhost:<nodePort> (in-cluster) or the external server."""
    s3_endpoint_url: pulumi.Output[str] | None
    """S3 endpoint for pods (MLFLOW_S3_ENDPOINT_URL); None for AWS."""
    s3_secret_name: pulumi.Output[str] | None
    """Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for pods; None: ambient credentials."""
    image_pull_secret_name: pulumi.Output[str] | None
    """dockerconfigjson Secret for the external registry; None when pulls need no credentials."""
    mlflow_image: pulumi.Output[str] | None
    """The MLflow image reference deployed; None with an external tracking server."""
    tracking_secret_name: pulumi.Output[str] | None
    """Secret holding MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for pods that write to
    MLflow; None without tracking_auth."""
    push_target: PushTarget
    """Where TrainingJob and ModelServing push the images they build (not a stack output)."""

    def __init__(
        self, name: str, args: ModelRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:ModelRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = args.namespace

        # The artifact bucket.
        if args.create_bucket:
            from components.providers.s3_bucket import S3Bucket, S3BucketArgs

            bucket = S3Bucket(
                f"{name}-bucket",
                S3BucketArgs(
                    bucket_name=args.bucket_name,
                    endpoint_url=args.s3_endpoint_url,
                    region=args.bucket_region,
                    access_key_id=args.s3_access_key_id,
                    secret_access_key=args.s3_secret_access_key,
                    versioning=True,
                    block_public_access=True,
                    force_destroy=args.force_destroy_bucket,
                    encryption=args.bucket_encryption,
                    tls_only=args.bucket_tls_only,
                ),
                opts=protected(child, args.protect),
            )
            self.artifact_root = bucket.uri
        else:
            self.artifact_root = pulumi.Output.from_input(f"s3://{args.bucket_name}")

        pod_s3_endpoint = args.s3_cluster_endpoint_url or args.s3_endpoint_url
        self.s3_endpoint_url = pulumi.Output.from_input(pod_s3_endpoint) if pod_s3_endpoint else None
        s3_env: list[dict[str, Any]] = []
        if args.s3_access_key_id is not None:
            s3_secret = k8s.core.v1.Secret(
                f"{name}-s3-credentials",
                metadata={
                    "namespace": ns,
                    "labels": self._labels(args, "registry"),
                },
                type="Opaque",
                string_data={
                    "AWS_ACCESS_KEY_ID": pulumi.Output.secret(args.s3_access_key_id),
                    "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(args.s3_secret_access_key),
                },
                opts=child,
            )
            self.s3_secret_name = object_name(s3_secret)
            s3_env = secret_env(self.s3_secret_name, S3_CREDENTIAL_KEYS)
        else:
            self.s3_secret_name = None
        if pod_s3_endpoint:
            s3_env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": pod_s3_endpoint})
        s3_env.append({"name": "AWS_DEFAULT_REGION", "value": args.bucket_region})

        # The image registry: first, because the MLflow image may be pushed to it.
        registry_ready: list[pulumi.Resource] = []
        if args.registry_mode is RegistryMode.IN_CLUSTER:
            registry_service, registry_deployment = self._image_registry(name, args, child)
            registry_ready = [registry_deployment, registry_service]
            self.registry_server = registry_service.spec.apply(
                lambda s: f"localhost:{(s.ports or [])[0].node_port}"
            )
            self.image_pull_secret_name = None
            self.push_target = PushTarget(server=self.registry_server)
        else:
            assert args.registry_server is not None
            self.registry_server = pulumi.Output.from_input(args.registry_server)
            self.push_target = PushTarget(
                server=args.registry_server,
                username=args.registry_username,
                password=pulumi.Output.secret(args.registry_password) if args.registry_password else None,
            )
            self.image_pull_secret_name = image_pull_secret(
                f"{name}-pull-secret",
                ns,
                self._labels(args, "image-registry", app=IMAGE_REGISTRY_SERVICE),
                self.push_target,
                child,
            )

        self.tracking_secret_name = self._client_credentials(name, args, child)
        # MLflow, unless the stack uses a tracking server of its own.
        if args.tracking_server_url:
            self.mlflow_image = None
            self.tracking_uri = pulumi.Output.from_input(args.tracking_server_url)
        else:
            self.mlflow_image, _ = image_reference(
                self, f"{name}-mlflow-image", args.mlflow_image, self.push_target, depends_on=registry_ready
            )
            self.tracking_uri = service_url(self._mlflow(name, args, child, s3_env, self.mlflow_image))

        self.register_outputs(
            {
                "tracking_uri": self.tracking_uri,
                "artifact_root": self.artifact_root,
                "registry_server": self.registry_server,
                "s3_endpoint_url": self.s3_endpoint_url,
                "s3_secret_name": self.s3_secret_name,
                "image_pull_secret_name": self.image_pull_secret_name,
                "mlflow_image": self.mlflow_image,
                "tracking_secret_name": self.tracking_secret_name,
            }
        )

    @staticmethod
    def _labels(args: ModelRegistryArgs, component: Any, app: str = "mlflow") -> dict[str, str]:
        return {**labels(app, component, args.stack), **args.extra_labels}

    def _image_registry(
        self, name: str, args: ModelRegistryArgs, child: pulumi.ResourceOptions
    ) -> tuple[k8s.core.v1.Service, k8s.apps.v1.Deployment]:
        lbl = self._labels(args, "image-registry", app=IMAGE_REGISTRY_SERVICE)
        selector = {k: lbl[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
        volume_claim(
            f"{name}-image-registry-data",
            IMAGE_REGISTRY_DATA,
            args.namespace,
            lbl,
            args.registry_storage_size,
            child,
            protect=args.protect,
        )
        probes = {
            "readinessProbe": {"httpGet": {"path": "/", "port": "registry"}, "periodSeconds": 10},
            # Liveness only asks whether the process still accepts connections: a slow storage
            # backend makes the registry unready, not worth a restart.
            "livenessProbe": {"tcpSocket": {"port": "registry"}, "periodSeconds": 10},
        }
        # The probes' budget (tests/components check it against the rendered container's).
        rollout = Rollout(probe_budget_seconds(probes))
        deployment = k8s.apps.v1.Deployment(
            f"{name}-image-registry",
            metadata={"namespace": args.namespace, "labels": lbl},
            spec={
                "replicas": 1,
                **rollout.spec(),
                # One writer on a ReadWriteOnce volume.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": lbl},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security_context(),
                        "containers": [
                            {
                                "name": "registry",
                                "image": args.registry_image,
                                "ports": [{"name": "registry", "containerPort": REGISTRY_PORT}],
                                "env": [
                                    {"name": "REGISTRY_HTTP_ADDR", "value": f"0.0.0.0:{REGISTRY_PORT}"},
                                    {"name": "REGISTRY_STORAGE_DELETE_ENABLED", "value": "true"},
                                ],
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/registry"}],
                                **probes,
                                "resources": resources("50m", "64Mi", "500m", "256Mi"),
                                "securityContext": container_security_context(),
                            }
                        ],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": IMAGE_REGISTRY_DATA}}
                        ],
                    },
                },
            },
            opts=rollout.options(child),
        )
        service = k8s.core.v1.Service(
            f"{name}-image-registry",
            metadata={"name": IMAGE_REGISTRY_SERVICE, "namespace": args.namespace, "labels": lbl},
            spec={
                # NodePort so that the host pushes to, and kubelets pull from, localhost:<port>:
                # Docker and containerd both allow plain HTTP to localhost registries.
                "type": "NodePort",
                "selector": selector,
                "ports": [
                    {
                        "name": "registry",
                        "port": REGISTRY_PORT,
                        "targetPort": "registry",
                        "nodePort": args.registry_node_port,
                    }
                ],
            },
            opts=child,
        )
        return service, deployment

    def _client_credentials(
        self, name: str, args: ModelRegistryArgs, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str] | None:
        """The Secret pods that write to an authenticated MLflow read their credentials from."""
        if not args.tracking_auth:
            return None
        secret = k8s.core.v1.Secret(
            f"{name}-mlflow-client",
            metadata={"namespace": args.namespace, "labels": self._labels(args, "registry")},
            type="Opaque",
            string_data=dict(
                zip(
                    TRACKING_CREDENTIAL_KEYS,
                    (args.tracking_admin_username, pulumi.Output.secret(args.tracking_admin_password)),
                    strict=True,
                )
            ),
            opts=child,
        )
        return object_name(secret)

    @staticmethod
    def _mlflow_auth(
        name: str,
        args: ModelRegistryArgs,
        child: pulumi.ResourceOptions,
        lbl: dict[str, str],
        env: list[dict[str, Any]],
        volumes: list[dict[str, Any]],
        mounts: list[dict[str, Any]],
    ) -> None:
        """The basic-auth app's Secret, mounted (config) and read into the env (password, CSRF key).

        Its user store lives beside the runs: a file on the SQLite volume, or tables of their own
        (versioned apart, alembic_version_auth) in the external database that every replica shares.
        """
        database = (
            "sqlite:////data/basic_auth.db" if args.backend is BackendStore.SQLITE else args.database_url
        )
        data: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
            pulumi.Output.all(args.tracking_admin_password, database).apply(
                lambda v: auth_secret_data(args.tracking_admin_username, str(v[0]), str(v[1]))
            )
        )
        secret = k8s.core.v1.Secret(
            f"{name}-mlflow-auth",
            metadata={"namespace": args.namespace, "labels": lbl},
            type="Opaque",
            string_data=data,
            opts=child,
        )
        secret_name = object_name(secret)
        env.append({"name": "MLFLOW_AUTH_CONFIG_PATH", "value": AUTH_CONFIG_PATH})
        env += secret_env(secret_name, AUTH_ENV_KEYS)
        volumes.append(
            {
                "name": "auth",
                "secret": {
                    "secretName": secret_name,
                    "items": [{"key": AUTH_CONFIG_FILE, "path": AUTH_CONFIG_FILE}],
                },
            }
        )
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})

    def _mlflow(
        self,
        name: str,
        args: ModelRegistryArgs,
        child: pulumi.ResourceOptions,
        s3_env: list[dict[str, Any]],
        image: pulumi.Output[str],
    ) -> k8s.core.v1.Service:
        lbl = self._labels(args, "registry")
        selector = {k: lbl[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
        workers = args.tracking_workers or (1 if args.backend is BackendStore.SQLITE else 2)
        env: list[dict[str, Any]] = [
            *s3_env,
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            *({"name": key, "value": value} for key, value in SERVER_ENV.items()),
        ]
        volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
        mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
        if args.backend is BackendStore.SQLITE:
            volume_claim(
                f"{name}-mlflow-data",
                MLFLOW_DATA,
                args.namespace,
                lbl,
                args.tracking_storage_size,
                child,
                protect=args.protect,
            )
            backend_uri = "sqlite:////data/mlflow.db"
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": MLFLOW_DATA}})
            mounts.append({"name": "data", "mountPath": "/data"})
            strategy: dict[str, Any] = {"type": "Recreate"}
        else:
            db_secret = k8s.core.v1.Secret(
                f"{name}-mlflow-database",
                metadata={"namespace": args.namespace, "labels": lbl},
                type="Opaque",
                string_data={"MLFLOW_BACKEND_STORE_URI": pulumi.Output.secret(args.database_url)},
                opts=protected(child, args.protect),  # all the stack holds of an external database
            )
            env += secret_env(object_name(db_secret), ("MLFLOW_BACKEND_STORE_URI",))
            backend_uri = "$(MLFLOW_BACKEND_STORE_URI)"  # expanded by the kubelet from the env
            strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        if args.tracking_auth:
            self._mlflow_auth(name, args, child, lbl, env, volumes, mounts)
        server_args = pulumi.Output.from_input(args.namespace).apply(
            lambda namespace: mlflow_server_args(
                backend_store_uri=backend_uri,
                # Clients (the training Job) write artifacts to S3 themselves.
                artifacts=f"s3://{args.bucket_name}/_runs",
                allowed_hosts=[*service_hosts(namespace), *args.tracking_allowed_hosts],
                cors_allowed_origins=args.tracking_cors_origins,
                auth=args.tracking_auth,
                workers=workers,
            )
        )
        probes = {
            "readinessProbe": {
                "httpGet": {"path": "/health", "port": "http"},
                "periodSeconds": 10,
                "timeoutSeconds": 5,
            },
            # A busy database makes MLflow unready; only a dead listener is worth a restart.
            "livenessProbe": {
                "tcpSocket": {"port": "http"},
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "initialDelaySeconds": 30,
            },
        }
        # The probes' budget (tests/components check it against the rendered container's); a
        # rolling update brings up one new pod at a time (maxSurge 1), Recreate all at once.
        rollout = Rollout(
            probe_budget_seconds(probes),
            max_pods=args.tracking_replicas if strategy["type"] == "RollingUpdate" else 1,
        )
        k8s.apps.v1.Deployment(
            f"{name}-mlflow",
            metadata={"namespace": args.namespace, "labels": lbl},
            spec={
                "replicas": args.tracking_replicas,
                **rollout.spec(),
                "strategy": strategy,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": lbl},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security_context(),
                        "containers": [
                            {
                                "name": "mlflow",
                                "image": image,
                                "command": ["mlflow", "server"],
                                "args": server_args,
                                "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
                                "env": env,
                                "volumeMounts": mounts,
                                **probes,
                                # The server process plus ~300 MB per worker.
                                "resources": resources(
                                    "100m", f"{256 + 256 * workers}Mi", "1", f"{512 + 512 * workers}Mi"
                                ),
                                "securityContext": container_security_context(),
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
            opts=rollout.options(child),
        )
        if args.tracking_replicas > 1:
            # A node drain keeps all but one replica answering the Jobs and `pulumi up`.
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-mlflow",
                metadata={"namespace": args.namespace, "labels": lbl},
                spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
                opts=child,
            )
        port: dict[str, Any] = {"name": "http", "port": MLFLOW_PORT, "targetPort": "http"}
        if args.tracking_node_port is not None:
            port["nodePort"] = args.tracking_node_port
        return k8s.core.v1.Service(
            f"{name}-mlflow",
            metadata={"name": MLFLOW_SERVICE, "namespace": args.namespace, "labels": lbl},
            spec={
                # NodePort (dev) so that `pulumi up` reaches MLflow as localhost:<port> to move
                # the registry aliases after a rollout.
                "type": "ClusterIP" if args.tracking_node_port is None else "NodePort",
                "selector": selector,
                "ports": [port],
            },
            opts=child,
        )
