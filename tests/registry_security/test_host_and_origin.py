"""MLflow's security middleware, on as the component runs it: only its own names in the Host
header (DNS rebinding), and only allowed origins may write from a browser."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.registry_security.conftest import ALLOWED_ORIGIN, request
from tests.services import TEST_NAMESPACE, MlflowService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREATE = "/api/2.0/mlflow/experiments/create"


def _create(service: MlflowService, headers: dict[str, str]) -> int:
    body = json.dumps({"name": f"origin-{uuid.uuid4().hex[:8]}"}).encode()
    return request(service, "POST", CREATE, headers, body).status


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        "evil.example.com:5000",
        # A name that merely starts like the Service's: `mlflow.*` would have let it in.
        "mlflow.attacker.example:5000",
        f"mlflow.{TEST_NAMESPACE}.svc.cluster.local.attacker.example",
        "",
    ],
)
def test_a_foreign_host_header_is_refused(registry_server: MlflowService, host: str) -> None:
    for method, target, body in (("GET", SEARCH, None), ("POST", CREATE, b'{"name": "rebound"}')):
        answer = request(registry_server, method, target, {"Host": host}, body)
        assert answer.status == 403, (host, method, answer)
        assert b"Invalid Host header" in answer.body
    assert request(registry_server, "GET", "/", {"Host": host}).status == 403


@pytest.mark.parametrize(
    "host",
    ["mlflow:5000", f"mlflow.{TEST_NAMESPACE}:5000", f"mlflow.{TEST_NAMESPACE}.svc.cluster.local:5000"],
)
def test_the_service_names_are_answered(registry_server: MlflowService, host: str) -> None:
    assert request(registry_server, "GET", SEARCH, {"Host": host}).status == 200


def test_a_cross_origin_write_is_refused_and_an_allowed_origin_writes(registry_server: MlflowService) -> None:
    for origin in (
        "https://evil.example.com",
        "null",
        "https://ui.example.com.evil.example",
        "http://ui.example.com",
    ):
        assert _create(registry_server, {"Origin": origin}) == 403, origin
    assert _create(registry_server, {"Origin": ALLOWED_ORIGIN}) == 200
    assert _create(registry_server, {}) == 200  # not a browser: no Origin
    # A browser's preflight from a foreign origin gets no grant either.
    preflight = request(
        registry_server,
        "OPTIONS",
        CREATE,
        {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers.get("access-control-allow-origin") != "https://evil.example.com"
