"""Real `mlflow server`s started with the ModelRegistry component's own arguments, and a canary
file outside every artifact root that no request may ever read.

Three servers, as the toolkit runs them: `registry` is the component's Deployment (artifacts
written by clients, no artifact serving) with an extra CORS origin; `proxy` serves artifacts
(as tests/services.py runs MLflow for the other tests); `authenticated` adds the basic-auth app,
as prod runs it. Each artifact location is a local folder, so that a traversal that escaped
would find the canary on this file system.
"""

from __future__ import annotations

import base64
import http.client
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.services import MlflowService, run_mlflow_server

ALLOWED_ORIGIN = "https://ui.example.com"
ADMIN_PASSWORD = "Adm1n-%(pass)s-5e2a7c"
"""The configured admin password; its % must reach MLflow as written (no interpolation)."""


@dataclass(frozen=True)
class Canary:
    path: Path
    """A file outside every artifact root."""
    secret: bytes
    """Its contents: no response may carry them."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]


def request(
    service: MlflowService,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    login: tuple[str, str] | None = None,
) -> Response:
    """One HTTP request sent exactly as given (no path normalisation, any Host header)."""
    url = urlsplit(service.tracking_uri)
    assert url.hostname is not None and url.port is not None
    sent = {"Host": url.netloc, **(headers or {})}
    if login is not None:
        sent["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=sent)
        answer = connection.getresponse()
        return Response(answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()})
    finally:
        connection.close()


@pytest.fixture(scope="session")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Canary:
    folder = tmp_path_factory.mktemp("outside")
    path = folder / f"canary-{uuid.uuid4().hex[:8]}.txt"
    secret = f"CANARY-{uuid.uuid4().hex}".encode()
    path.write_bytes(secret)
    return Canary(path, secret)


def _server(tmp: Path, **options: object) -> Iterator[MlflowService]:
    service = run_mlflow_server(tmp, artifacts=str(tmp / "artifacts"), **options)  # type: ignore[arg-type]
    yield service
    service.stop()


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    yield from _server(
        tmp_path_factory.mktemp("registry"), serve_artifacts=False, cors_allowed_origins=(ALLOWED_ORIGIN,)
    )


@pytest.fixture(scope="session")
def proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    yield from _server(tmp_path_factory.mktemp("proxy"), serve_artifacts=True)


@pytest.fixture(scope="session")
def authenticated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    yield from _server(tmp_path_factory.mktemp("auth"), serve_artifacts=False, admin_password=ADMIN_PASSWORD)
