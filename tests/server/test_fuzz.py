"""Generated bodies never get a 5xx, never stop the server, and /metrics counts every 4xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.server.conftest import Release, ServerProcess

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "text/csv",
        "text/plain",
        "",
        "application/json; charset=latin-1",
    ]
)


@st.composite
def bodies(draw: st.DrawFn, columns: list[str], model_name: str) -> tuple[str, str, bytes]:
    """(path, content type, body): mostly near-valid requests with one thing wrong, some noise."""
    width = len(columns)
    names = list(columns)
    change = draw(st.integers(0, 4))
    if change == 1:
        names.reverse()
    elif change == 2:
        names[draw(st.integers(0, width - 1))] = draw(st.text(max_size=6))
    elif change == 3:
        names.pop()
    elif change == 4:
        names.append(draw(st.sampled_from(columns) | st.text(max_size=6)))
    # Valid rows with a few drawn mutations: cheap to generate, and near the edge of valid.
    rows: list[list[Any]] = [
        [0.25 * (i + j) for j in range(len(names))] for i in range(draw(st.integers(0, 3)))
    ]
    for _ in range(draw(st.integers(0, 3))):
        if not rows:
            break
        row = rows[draw(st.integers(0, len(rows) - 1))]
        action = draw(st.integers(0, 3))
        if action == 0 and row:
            row.pop()
        elif action == 1:
            row.append(draw(SCALARS))
        elif row:
            row[draw(st.integers(0, len(row) - 1))] = draw(SCALARS)
    cell = SCALARS
    kind = draw(st.integers(0, 8))
    path = "/invocations"
    payload: Any
    if kind == 0:
        payload = {"dataframe_split": {"columns": names, "data": rows}}
    elif kind == 1:
        payload = {"dataframe_records": [dict(zip(names, r, strict=False)) for r in rows]}
    elif kind == 2:
        payload = {draw(st.sampled_from(["instances", "inputs"])): rows}
    elif kind == 3:
        payload = {"inputs": {n: draw(st.lists(cell, max_size=3)) for n in names}}
    elif kind == 4:
        payload = draw(
            st.dictionaries(st.sampled_from(["dataframe_split", "instances", "params", "x"]), JSON_VALUES)
        )
    elif kind == 5:
        payload = draw(JSON_VALUES)
    elif kind == 6:
        path = f"/v2/models/{model_name}/infer"
        flat = [v for r in rows for v in r]
        shape = draw(st.sampled_from([[len(rows), width], [len(flat)], [len(rows), len(names)], [-1, width]]))
        datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "X"]))
        payload = {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": flat}]}
        if draw(st.booleans()):
            payload["outputs"] = [{"name": draw(st.sampled_from(["predict", "predict_proba", "y"]))}]
    elif kind == 7:
        text = ",".join(names) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows)
        return path, "text/csv", text.encode("utf-8", "surrogatepass")
    else:
        return path, draw(CONTENT_TYPES), draw(st.binary(max_size=64))
    body = json.dumps(payload, allow_nan=True).encode("utf-8", "surrogatepass")
    return path, draw(CONTENT_TYPES), body


def _check(status: int, body: bytes) -> None:
    assert status < 500, body[:300]
    parsed = json.loads(body)
    if status != 200:
        assert isinstance(parsed.get("error_code"), str)


@pytest.mark.slow
def test_fuzz_in_process(clients: dict[str, TestClient], releases: dict[str, Release]) -> None:
    current: list[TestClient] = [next(iter(clients.values()))]
    for key, client in clients.items():
        release = releases[key]

        @settings(
            max_examples=1000,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=bodies(release.columns, release.model_name))
        def run(request: tuple[str, str, bytes]) -> None:
            path, content_type, body = request
            headers = {"content-type": content_type} if content_type else {}
            response = current[0].post(path, content=body, headers=headers)
            _check(response.status_code, response.content)

        current[0] = client
        run()
        assert client.get("/v2/health/ready").status_code == 200


def _client_errors(metrics_text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "mlops_server_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["status"].startswith("4"):
                    total += sample.value
    return total


@pytest.mark.slow
def test_fuzz_real_process(rf_process: ServerProcess, releases: dict[str, Release]) -> None:
    release = releases["rf"]
    sent_4xx = 0
    with httpx.Client(base_url=rf_process.url, timeout=10) as http:
        before = _client_errors(http.get("/metrics").text)

        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(request=bodies(release.columns, release.model_name))
        def run(request: tuple[str, str, bytes]) -> None:
            nonlocal sent_4xx
            path, content_type, body = request
            headers = {"content-type": content_type} if content_type else {}
            response = http.post(path, content=body, headers=headers)
            _check(response.status_code, response.content)
            sent_4xx += 400 <= response.status_code < 500

        run()
        assert rf_process.proc.poll() is None, rf_process.log_text()
        assert http.get("/v2/health/ready").status_code == 200
        after = _client_errors(http.get("/metrics").text)
    assert sent_4xx > 100
    assert after - before == sent_4xx
