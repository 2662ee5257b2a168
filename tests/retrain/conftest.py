"""The retrain trigger as a real process, and a local stand-in of GitHub's REST API.

`FakeGitHub` is a small HTTP server on loopback that records every request and answers 204, or
whatever status (and delay) a test asks for. `start_trigger` runs `python -m model.retrain_trigger`
on a free loopback port, pointed at it, the way the pod runs it (settings from MLOPS_RETRAIN_*).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess, wait_live
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
GITHUB_TOKEN = "ghp-test-github-token-0123456789"
WEBHOOK_TOKEN = "webhook-test-token-abcdef0123456789"
REPOSITORY = "acme/models"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    """What the stand-in answered."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeGitHub:
    """Records requests; answers `status` after `delay` seconds (tests change both)."""

    status: int = 204
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def accepted(self) -> list[Recorded]:
        """Dispatches GitHub took (answered 2xx)."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def all(self) -> list[Recorded]:
        with self.lock:
            return list(self.requests)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
        self.status, self.delay = 204, 0.0

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, delay = fake.status, fake.delay
                # Recorded on arrival: a slow answer belongs to the test that asked for it.
                with fake.lock:
                    fake.requests.append(Recorded("POST", self.path, dict(self.headers), body, status))
                if delay:
                    time.sleep(delay)
                payload = (
                    b"" if status == 204 else json.dumps({"message": f"stand-in says {status}"}).encode()
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the trigger gave up waiting (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class TriggerProcess(ServerProcess):
    """The trigger as a process: stop() and log_text() as the model server's."""

    def post(self, body: Any, token: str | None = WEBHOOK_TOKEN, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + "/alertmanager", content=content, headers=headers, timeout=30, **kwargs)


def start_trigger(scratch: Path, api_url: str, *args: str, timeout: float = 30.0) -> TriggerProcess:
    port = free_port()
    log = scratch / f"trigger-{port}.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_RETRAIN_")},
        "MLOPS_RETRAIN_GITHUB_TOKEN": GITHUB_TOKEN,
        "MLOPS_RETRAIN_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "MLOPS_RETRAIN_REPOSITORY": REPOSITORY,
        "MLOPS_RETRAIN_GITHUB_API_URL": api_url,
    }
    argv = [sys.executable, "-m", "model.retrain_trigger", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    trigger = TriggerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_live(trigger, timeout, path="/readyz")
    except AssertionError:
        trigger.stop()
        raise
    return trigger


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def trigger(github: FakeGitHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TriggerProcess]:
    """One trigger process for the module (each test uses its own model names)."""
    process = start_trigger(
        tmp_path_factory.mktemp("trigger"),
        github.url,
        "--github-timeout-seconds",
        "1",
        "--max-body-bytes",
        "65536",
    )
    yield process
    process.stop()


@pytest.fixture
def gh(github: FakeGitHub) -> FakeGitHub:
    """The stand-in, emptied and answering 204."""
    github.reset()
    return github


def alert(
    model: str,
    fingerprint: str,
    *,
    status: str = "firing",
    name: str = "MLOpsModelDrift",
    feature: str | None = "mean radius",
    starts_at: str = "2025-06-01T10:00:00Z",
    release_id: str = "0123456789ab",
    namespace: str = "mlops-dev",
    summary: str | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    labels = {"alertname": name, "model_name": model, "release_id": release_id, "namespace": namespace}
    if feature is not None:
        labels["feature"] = feature
    for key in drop:
        labels.pop(key, None)
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": summary or f"Drift on {model}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body, payload version 4."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MLOpsModelDrift"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "retrain",
        "groupLabels": {"alertname": "MLOpsModelDrift"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
