"""Several server processes on one pod's ports (--workers): what a user sees is one server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import GRPCInferenceServiceStub
from starlette.testclient import TestClient

from model.server import ServerSettings, create_app
from model.server.workers import usable_cpus
from tests.server.conftest import (
    REPO,
    Release,
    ServerProcess,
    expected,
    metric_samples,
    running_server,
    wait_ready,
)

pytestmark = pytest.mark.slow

_INFER_200 = (
    ("method", "POST"),
    ("protocol", "http"),
    ("route", "/v2/models/{name}/infer"),
    ("status", "200"),
)


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _v2_row(row: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row.tolist()}]}


def _shared_dir(server: ServerProcess) -> Path:
    port = server.url.rsplit(":", 1)[1]
    (shared,) = (server.log.parent / f"tmp-{port}").glob("mlops-server-*")
    return shared


def test_workers_share_the_ports_the_counts_and_the_drift_window(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    release = releases["lr"]
    frame = release.frame.head(40)
    want = expected(release, frame)
    with running_server(str(release.folder), tmp_path, "--workers", "2") as server:
        assert len(_children(server.proc.pid)) == 2
        # A fresh connection per request: the kernel spreads connections over the workers.
        answers = [
            httpx.post(f"{server.url}/v2/models/{release.model_name}/infer", json=_v2_row(row)).json()[
                "outputs"
            ][0]["data"][0]
            for row in frame.to_numpy()
        ]
        assert answers == want
        # A worker per core has no core to spare for a model thread (CI's machine has two).
        where = "on a worker thread" if usable_cpus() > 2 else "on the event loop"
        assert server.log_text().count(f"model calls longer than a thread hop run {where}") == 2
        channel = grpc.insecure_channel(server.grpc_target)
        assert GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest()).ready
        channel.close()
        time.sleep(1.5)  # each worker folds its drift rows within a second
        # Both workers answered, each into its own share of the drift window.
        filled = {path.name: int(np.load(path)[0]) for path in _shared_dir(server).glob("drift-*-filled.npy")}
        assert len(filled) == 2 and all(rows > 0 for rows in filled.values()), filled
        for _ in range(4):  # whichever worker answers a new connection's scrape counts them all
            with httpx.Client(base_url=server.url) as http:
                assert metric_samples(http, "mlops_server_requests_total")[_INFER_200] == len(frame)
            with httpx.Client(base_url=server.url) as http:
                assert metric_samples(http, "mlops_server_drift_window_rows") == {(): len(frame)}
            with httpx.Client(base_url=server.url) as http:
                assert metric_samples(http, "mlops_server_ready") == {(): 1}
        assert sum(filled.values()) == len(frame)


def test_sigterm_drains_every_worker_and_exits_0(releases: dict[str, Release], tmp_path: Path) -> None:
    with running_server(str(releases["lr"].folder), tmp_path, "--workers", "2") as server:
        workers = _children(server.proc.pid)
        shared = _shared_dir(server)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log_text()
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
        assert not shared.exists()
        log = server.log_text()
        assert "[0]: signal SIGTERM: unready" in log and "[1]: signal SIGTERM: unready" in log


def test_a_worker_that_dies_stops_the_server_with_an_error(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    with running_server(
        str(releases["lr"].folder), tmp_path, "--workers", "2", "--drain-seconds", "2"
    ) as server:
        first, second = _children(server.proc.pid)
        os.kill(second, signal.SIGKILL)
        assert server.proc.wait(30) == 128 + signal.SIGKILL  # as a shell reports the worker's end
        assert not Path(f"/proc/{first}").exists()
        assert f"worker 1 (pid {second}) exited with -9: stopping the others" in server.log_text()


def test_ready_only_once_every_worker_loaded(releases: dict[str, Release], tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    settings = ServerSettings(
        model_uri=str(releases["lr"].folder), grpc_port=0, workers=2, worker_index=0, shared_dir=str(tmp_path)
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready-0").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = client.get("/v2/health/ready")
        assert waiting.status_code == 503 and waiting.json() == {"ready": False, "reason": "workers_loading"}
        assert client.post("/invocations", json={"instances": [[0.1] * 20]}).status_code == 200
        (tmp_path / "ready-1").touch()
        wait_ready(client)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "invalid server setting workers=0"),
        (["--workers", "2", "--port", "0"], "workers > 1 share one HTTP port"),
    ],
)
def test_bad_worker_settings_are_refused(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model.server", "--model-uri", "/nowhere", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize(
    ("files", "want"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # a pod limited to 1.5 CPUs (cgroup v2)
        ({"cpu.max": "max 100000\n"}, None),  # no limit: the cores it may run on
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup CPU controller in view
        ({"cpu.max": "1000000 100000\n"}, None),  # a limit above the cores it may run on
    ],
)
def test_usable_cpus_follow_the_pods_cpu_limit(
    tmp_path: Path, files: dict[str, str], want: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cores = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == (cores if want is None else min(want, cores))
