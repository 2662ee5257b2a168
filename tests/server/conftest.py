"""Fixtures for the model server: two trained releases, the in-process app, the real process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from model.server import ServerApp, ServerSettings, create_app
from model.spec import RegistrySettings
from tests.services import free_port

if TYPE_CHECKING:
    from model.spec import TrainingSpec

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class Release:
    key: str
    folder: Path
    model_name: str
    release_id: str
    pipeline: Any
    frame: pd.DataFrame
    """Feature rows (signature columns) to send."""

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)


def scratch_registry(workdir: Path) -> RegistrySettings:
    """A registry of its own under `workdir`: SQLite and a local artifact root."""
    return RegistrySettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", artifact_root=str(workdir / "artifacts")
    )


def train_releases(
    specs: dict[str, TrainingSpec], workdir: Path, registry: RegistrySettings | None = None
) -> dict[str, Path]:
    """Each spec trained and registered (by default into a scratch registry under `workdir`):
    its release folder."""
    from model.train import train_release

    registry = registry or scratch_registry(workdir)
    return {
        key: Path(train_release(spec, registry, workdir, log=lambda _m: None).model_uri).parent
        for key, spec in specs.items()
    }


def _train(workdir: Path, registry: RegistrySettings) -> dict[str, Release]:
    from sklearn.datasets import load_breast_cancer, make_classification

    from model.artifact import ReleaseMetadata, load_sklearn_model
    from model.spec import TrainingSpec

    X, y = make_classification(n_samples=600, n_features=20, n_informative=8, random_state=3)
    frame = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(20)])
    frame["label"] = y
    csv = workdir / "classification20.csv"
    frame.to_csv(csv, index=False)
    specs = {
        "lr": TrainingSpec(
            model_name="server-lr",
            dataset=str(csv),
            target="label",
            task="classification",
            estimator="logistic_regression",
            params={"max_iter": 500},
        ),
        "rf": TrainingSpec(
            model_name="server-rf",
            dataset="sklearn:breast_cancer",
            target="target",
            task="classification",
            estimator="random_forest",
            params={"n_estimators": 40},
        ),
        "hgb": TrainingSpec(
            model_name="server-hgb",
            dataset="sklearn:breast_cancer",
            target="target",
            task="classification",
            estimator="hist_gradient_boosting",
            params={"max_iter": 30},
        ),
    }
    cancer = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    features = {"lr": frame.drop(columns="label"), "rf": cancer, "hgb": cancer}
    releases = {}
    for key, folder in train_releases(specs, workdir, registry).items():
        meta = ReleaseMetadata.from_json((folder / "release.json").read_text())
        pipeline = load_sklearn_model(folder / "model", meta.estimator, meta.task, meta.model_sha256)
        releases[key] = Release(key, folder, meta.model_name, meta.release_id, pipeline, features[key])
    return releases


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-models")


@pytest.fixture(scope="session")
def registry(workdir: Path) -> RegistrySettings:
    """The scratch registry the server tests train into."""
    return scratch_registry(workdir)


@pytest.fixture(scope="session")
def releases(workdir: Path, registry: RegistrySettings) -> dict[str, Release]:
    return _train(workdir, registry)


@pytest.fixture(scope="session", params=["lr", "rf"])
def release(request: pytest.FixtureRequest, releases: dict[str, Release]) -> Release:
    return releases[request.param]


def copy_release(release: Release, tmp_path: Path, without_runtime: bool = False) -> Path:
    """A copy of the release folder to tamper with (optionally without its precompiled runtime)."""
    target = tmp_path / release.release_id
    shutil.copytree(release.folder, target)
    if without_runtime:
        shutil.rmtree(target / "model" / "runtime")
    return target


def wait_ready(client: TestClient | httpx.Client, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"server not ready within {timeout}s")


@pytest.fixture(scope="session")
def clients(releases: dict[str, Release]) -> Iterator[dict[str, TestClient]]:
    """The real app object in process, one per model of the `release` fixture, lifespan started."""
    opened = {}
    for key, rel in releases.items():
        if key not in ("lr", "rf"):
            continue
        settings = ServerSettings(
            model_uri=str(rel.folder), max_batch_rows=500, max_body_bytes=1_000_000, grpc_port=free_port()
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        opened[key] = client
    try:
        for client in opened.values():
            wait_ready(client)
        yield opened
    finally:
        for client in opened.values():
            client.__exit__(None, None, None)


@pytest.fixture()
def client(release: Release, clients: dict[str, TestClient]) -> TestClient:
    return clients[release.key]


def grpc_target(client: TestClient) -> str:
    """host:port of the gRPC service of an in-process app."""
    app = client.app
    assert isinstance(app, ServerApp) and app.grpc is not None
    return f"127.0.0.1:{app.grpc.port}"


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    grpc_target: str = ""
    """host:port of its gRPC service ("" when started with --grpc-port 0)."""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    model_uri: str, scratch: Path, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    port = free_port()
    if "--grpc-port" not in args:
        args = (*args, "--grpc-port", str(free_port()))
    grpc_port = int(args[args.index("--grpc-port") + 1])
    tmp = scratch / f"tmp-{port}"
    tmp.mkdir(parents=True, exist_ok=True)
    log = scratch / f"server-{port}.log"
    environ = {**os.environ, "TMPDIR": str(tmp), "MLOPS_MODEL_URI": model_uri, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model.server", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=REPO,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(proc, f"http://127.0.0.1:{port}", log, f"127.0.0.1:{grpc_port}" if grpc_port else "")


def wait_live(server: ServerProcess, timeout: float = 30.0, path: str = "/v2/health/live") -> None:
    """Until `path` answers 200; fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log_text()}")
        try:
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not live within {timeout}s:\n{server.log_text()}")


@pytest.fixture()
def process_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def factory(model_uri: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = start_server(model_uri, tmp_path, *args, env=env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@contextmanager
def running_server(
    model_uri: str, scratch: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A real server process, live and ready, stopped when the block ends."""
    server = start_server(model_uri, scratch, *args, env=env)
    try:
        wait_live(server)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            wait_ready(http)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rf_process(
    releases: dict[str, Release], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server process on the random forest, shared by the process-level tests."""
    scratch = tmp_path_factory.mktemp("rf-process")
    with running_server(str(releases["rf"].folder), scratch, "--max-batch-rows", "500") as server:
        yield server


def metric_samples(http: httpx.Client | TestClient, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """One scrape's samples of `family` (e.g. mlops_server_requests_total), by sorted labels."""
    out = {}
    for metric in text_string_to_metric_families(http.get("/metrics").text):
        for sample in metric.samples:
            if sample.name == family:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def split_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}


def expected(release: Release, frame: pd.DataFrame) -> list[Any]:
    return np.asarray(release.pipeline.predict(frame)).tolist()
