"""Prometheus' own tools for the monitoring tests, from scripts/bootstrap-monitoring.

The bootstrap unpacks Debian's prometheus and prometheus-alertmanager packages (promtool,
amtool, prometheus) and builds upstream promtool and alertmanager at the deployed versions
(Debian's Prometheus has no Kubernetes service discovery, so its promtool cannot read our
`kubernetes_sd_configs`; Debian's Alertmanager needs its templates installed system-wide). A
missing tool fails the tests, with the command that provides it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.server.conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tools:
    bin: Path

    @property
    def promtool(self) -> Path:
        """Debian's promtool (rules: check and unit tests)."""
        return self.bin / "promtool"

    @property
    def upstream_promtool(self) -> Path:
        """promtool built from upstream at the deployed Prometheus version (config checks)."""
        return self.bin / "promtool-upstream"

    @property
    def amtool(self) -> Path:
        """Debian's amtool (configuration checks and routing tests)."""
        return self.bin / "amtool"

    @property
    def alertmanager(self) -> Path:
        """Alertmanager built from upstream at the deployed version (Debian's needs a system install)."""
        return self.bin / "alertmanager-upstream"

    @property
    def prometheus(self) -> Path:
        return self.bin / "prometheus"


def find_tools() -> Tools:
    """The bootstrap's bin folder; fails (never skips) when it was not run."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "bootstrap-monitoring"), "--print-path"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.fail(f"monitoring tools missing: run scripts/bootstrap-monitoring\n{proc.stderr}")
    tools = Tools(Path(proc.stdout.strip()))
    for tool in (tools.promtool, tools.upstream_promtool, tools.amtool, tools.prometheus, tools.alertmanager):
        if not tool.exists():
            pytest.fail(f"{tool} missing: run scripts/bootstrap-monitoring")
    return tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    return find_tools()


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str


def run(*argv: object, cwd: Path | None = None, timeout: float = 120) -> Result:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return Result(proc.returncode, proc.stdout + proc.stderr)


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))
    return path


@dataclass(frozen=True)
class LiveServer:
    """The real model server (a process) on a small trained release, with the rows to send it."""

    process: ServerProcess
    model_name: str
    release_id: str
    rows: pd.DataFrame

    @property
    def url(self) -> str:
        return self.process.url

    def predict(self, frame: pd.DataFrame) -> None:
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
        response = httpx.post(self.url + "/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text

    def scrape(self) -> str:
        response = httpx.get(self.url + "/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return response.text


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Train a small release (breast cancer, logistic regression) and serve it, as tests/server does."""
    from sklearn.datasets import load_breast_cancer

    from model.artifact import ReleaseMetadata
    from model.spec import RegistrySettings, TrainingSpec
    from model.train import train_release
    from tests.server.conftest import start_server, wait_live, wait_ready

    work = tmp_path_factory.mktemp("monitoring-server")
    registry = RegistrySettings(
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", artifact_root=str(work / "artifacts")
    )
    spec = TrainingSpec(
        model_name="monitoring-bc",
        dataset="sklearn:breast_cancer",
        target="target",
        task="classification",
        estimator="logistic_regression",
        params={"max_iter": 500},
    )
    outcome = train_release(spec, registry, work, log=lambda _m: None)
    folder = Path(outcome.model_uri).parent
    meta = ReleaseMetadata.from_json((folder / "release.json").read_text())
    server = start_server(str(folder), work)
    try:
        wait_live(server)
        with httpx.Client(base_url=server.url, timeout=5) as http:
            wait_ready(http)
        rows = load_breast_cancer(as_frame=True).frame.drop(columns="target")
        yield LiveServer(server, spec.model_name, meta.release_id, rows)
    finally:
        server.stop()
