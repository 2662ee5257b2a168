"""Real services for tests: SeaweedFS (S3) and an MLflow tracking server, on free loopback ports.

Every start waits with a bound and every stop goes to the process's own PID (and its group),
so a failed test never leaves a server behind and never kills someone else's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from components.providers.mlflow_credentials import TrackingCredentials

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Distinct free ports whose +10000 neighbours are free too (SeaweedFS derives gRPC ports)."""
    ports: set[int] = set()
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 65536 and _is_free(port + 10000):
            ports.add(port)
    return sorted(ports)


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    grace_s: float = 15
    """How long stop() waits after SIGTERM before SIGKILL."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # its own group: stop() reaches workers it forks
        )

    def wait_http(self, url: str, timeout_s: float, ok: tuple[int, ...] = (200,)) -> None:
        deadline = time.monotonic() + timeout_s
        last: str = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self.tail()}")
            try:
                response = httpx.get(url, timeout=2)
                if response.status_code in ok:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"{self.name} not ready at {url} within {timeout_s}s ({last}); log:\n{self.tail()}"
        )

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=15)


@dataclass
class S3Service:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: ManagedProcess
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 2}, connect_timeout=3),
        )

    def make_bucket(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Environment for boto3 and MLflow clients of this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self, timeout_s: float = 60) -> None:
        """Start (or restart, on the same ports and data) and wait until a bucket round-trips:
        the gateway answers before the filer and volume are ready."""
        self.process.start()
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.process.running:
                raise RuntimeError(f"seaweedfs exited; log:\n{self.process.tail()}")
            try:
                client = self.client()
                probe = f"probe-{uuid.uuid4().hex[:8]}"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="k", Body=b"v")
                client.delete_object(Bucket=probe, Key="k")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # any failure means not ready yet
                last = exc
                time.sleep(0.5)
        self.process.stop()
        raise TimeoutError(
            f"seaweedfs S3 not ready within {timeout_s}s ({last}); log:\n{self.process.tail()}"
        )

    def stop(self) -> None:
        self.process.stop()


def start_seaweedfs(workdir: Path, timeout_s: float = 60, host: str = "127.0.0.1") -> S3Service:
    """`weed server` with its S3 gateway, credentials enforced, every port chosen free.

    `host` is the one address it listens on: loopback, or the local cluster's bridge address
    (the host address its pods may reach) for a store the cluster's workloads use.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    access_key, secret_key = "mlops-test", uuid.uuid4().hex
    identities = {
        "identities": [
            {
                "name": "mlops",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    master, volume, filer, s3, s3grpc, iam, metrics = free_ports(7)
    argv = [
        str(VENV_BIN / "weed"),
        "server",
        f"-dir={workdir / 'data'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={master}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        "-volume.max=0",  # each bucket is a collection with volumes of its own: no fixed cap
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-iam.port={iam}",
        f"-metricsPort={metrics}",
    ]
    # SeaweedFS also takes admin credentials from AWS_* variables, which would override the
    # identities file with whatever the test process happens to have set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Its graceful shutdown takes ~25 s; test data need no flush, so stop it quickly.
    process = ManagedProcess("seaweedfs", argv, workdir / "weed.log", env=env, grace_s=3)
    service = S3Service(f"http://{host}:{s3}", access_key, secret_key, process)
    service.start(timeout_s)
    return service


@dataclass
class MlflowService:
    tracking_uri: str
    artifact_root: str
    """Where releases go: an s3:// root (start_mlflow), or the server's own artifact location."""
    process: ManagedProcess
    credentials: TrackingCredentials | None = None
    """The basic-auth admin, when the server runs with authentication."""

    def start(self, timeout_s: float = 90) -> None:
        """Start (or restart, on the same port and database)."""
        self.process.start()
        self.process.wait_http(f"{self.tracking_uri}/health", timeout_s)

    def stop(self) -> None:
        self.process.stop()


TEST_NAMESPACE = "mlops-test"
"""The namespace whose Service names the tests' servers answer to, as the component's does."""


def run_mlflow_server(
    workdir: Path,
    *,
    artifacts: str,
    serve_artifacts: bool,
    host: str = "127.0.0.1",
    cors_allowed_origins: tuple[str, ...] = (),
    admin_password: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
) -> MlflowService:
    """`mlflow server` on SQLite with the arguments the ModelRegistry component renders
    (`mlflow_server_args`): security middleware on, answering its Service's names, loopback and
    `host`; with `admin_password`, the basic-auth app configured as the component configures it."""
    # Imported here: the component module brings Pulumi, which most users of this module need not.
    from components.registry import (
        AUTH_CONFIG_FILE,
        SERVER_ENV,
        auth_secret_data,
        mlflow_server_args,
        service_hosts,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(VENV_BIN / "mlflow"),
        "server",
        *mlflow_server_args(
            backend_store_uri=f"sqlite:///{workdir / 'mlflow.db'}",
            artifacts=artifacts,
            serve_artifacts=serve_artifacts,
            allowed_hosts=[*service_hosts(TEST_NAMESPACE), host],
            cors_allowed_origins=cors_allowed_origins,
            auth=admin_password is not None,
            host=host,
            port=port,
        ),
    ]
    # Nothing inherited may loosen the server: no security switch, no auth settings of the caller's.
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_SERVER_", "MLFLOW_AUTH_"))}
    server_env.update({**(env or {}), **SERVER_ENV})
    credentials = None
    if admin_password is not None:
        credentials = TrackingCredentials("admin", admin_password)
        data = auth_secret_data(
            credentials.username, admin_password, f"sqlite:///{workdir / 'basic_auth.db'}"
        )
        config = workdir / AUTH_CONFIG_FILE
        config.write_text(data.pop(AUTH_CONFIG_FILE))
        server_env.update(data, MLFLOW_AUTH_CONFIG_PATH=str(config))
    service = MlflowService(
        f"http://{host}:{port}",
        artifacts,
        ManagedProcess("mlflow", argv, workdir / "mlflow.log", env=server_env),
        credentials,
    )
    service.start(timeout_s)
    return service


def start_mlflow(
    workdir: Path,
    s3: S3Service,
    timeout_s: float = 90,
    host: str = "127.0.0.1",
    admin_password: str | None = None,
) -> MlflowService:
    """`mlflow server` on SQLite, proxying run artifacts to a SeaweedFS bucket, listening on `host`;
    releases go to another bucket (`artifact_root`)."""
    runs_bucket = s3.make_bucket("mlflow-runs")
    releases_bucket = s3.make_bucket("releases")
    service = run_mlflow_server(
        workdir,
        artifacts=f"s3://{runs_bucket}/mlflow",
        serve_artifacts=True,
        host=host,
        admin_password=admin_password,
        env=s3.env(),
        timeout_s=timeout_s,
    )
    service.artifact_root = f"s3://{releases_bucket}"
    return service
