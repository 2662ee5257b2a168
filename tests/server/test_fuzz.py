"""Generated bodies never get a 5xx, never stop the server, and /metrics counts every 4xx; on the
real process 5,000 hostile requests leave memory, latency and metric label counts bounded."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from model.server.metrics import METHODS
from tests.server.conftest import Release, ServerProcess, running_server
from tests.server.fuzzing import MARKER, Fuzzer, FuzzRequest

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


FUZZ_BODIES = 5000
VALID_EVERY = 10
"""A valid one-row request after every this many fuzz bodies: the latency peer, measured alongside."""
FUZZ_MAX_BODY = 256 * 1024
"""The fuzzed server's --max-body-bytes: oversized bodies stay cheap to send."""
KNOWN_ROUTES = {
    "/invocations",
    "/v2/health/live",
    "/v2/health/ready",
    "/ping",
    "/health",
    "/version",
    "/metrics",
    "/v2",
    "/v2/models/{name}",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/models/{name}/versions/{version}/ready",
    "other",
}


@pytest.fixture()
def fuzz_process(releases: dict[str, Release], tmp_path: Path) -> Iterator[ServerProcess]:
    args = ("--max-batch-rows", "500", "--max-body-bytes", str(FUZZ_MAX_BODY))
    with running_server(str(releases["rf"].folder), tmp_path, *args) as server:
        yield server


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _label_values(metrics_text: str) -> dict[tuple[str, str], set[str]]:
    """Distinct values of each label of each metric family."""
    values: dict[tuple[str, str], set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label not in ("le", "quantile"):
                    values.setdefault((family.name, label), set()).add(value)
    return values


def _send(http: httpx.Client, request: FuzzRequest) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    response = http.request(request.method, request.path, content=request.body, headers=request.headers)
    return response.status_code, response.content, time.perf_counter() - started


def _p99(seconds: list[float]) -> float:
    return float(np.percentile(seconds, 99))


@pytest.mark.slow
def test_fuzz_real_process(fuzz_process: ServerProcess, releases: dict[str, Release]) -> None:
    """5,000 hostile requests against the real process: no 5xx, every error a small JSON body that
    echoes nothing, every 4xx counted; memory, latency and metric labels stay bounded."""
    release = releases["rf"]
    rows = release.frame.to_numpy()
    fuzz = Fuzzer(20261202, release.model_name, release.columns, rows, FUZZ_MAX_BODY, 500)
    pid = fuzz_process.proc.pid
    latency: dict[str, list[float]] = {}
    seconds: list[float] = []
    valid: list[float] = []
    sent_4xx = 0
    with httpx.Client(base_url=fuzz_process.url, timeout=30) as http:
        # Warm up (allocator pools, the fallback parsers, every route's metric children) first.
        warm = Fuzzer(1, release.model_name, release.columns, rows, FUZZ_MAX_BODY, 500)
        for _ in range(300):
            _send(http, warm.next())
            _send(http, warm.valid())
        rss = [_rss_mib(pid)]
        labels = [_label_values(http.get("/metrics").text)]
        before_4xx = _client_errors(http.get("/metrics").text)
        for i in range(FUZZ_BODIES):
            request = fuzz.next()
            status, body, took = _send(http, request)
            assert status < 500, (request.kind, request.method, request.path, status, body[:300])
            if status != 200 and request.method != "HEAD":
                assert isinstance(json.loads(body).get("error_code"), str), (request.kind, body[:300])
                assert MARKER not in body.decode(), (request.kind, body[:300])
            sent_4xx += 400 <= status < 500
            latency.setdefault(request.kind, []).append(took)
            seconds.append(took)
            if i % VALID_EVERY == 0:
                status, body, took = _send(http, fuzz.valid())
                assert status == 200, body[:300]
                valid.append(took)
            if i == FUZZ_BODIES // 2:
                rss.append(_rss_mib(pid))
                labels.append(_label_values(http.get("/metrics").text))
        rss.append(_rss_mib(pid))
        metrics_text = http.get("/metrics").text
        labels.append(_label_values(metrics_text))
        after_4xx = _client_errors(metrics_text)
        assert http.get("/v2/health/ready").status_code == 200
    assert fuzz_process.proc.poll() is None, fuzz_process.log_text()
    assert "Traceback" not in fuzz_process.log_text()
    assert after_4xx - before_4xx == sent_4xx

    assert sent_4xx >= FUZZ_BODIES // 2  # mostly error paths, as meant

    # Memory: measured growth 2-3 MiB over the 5,000 (0.7 in the second half), from ~106 MiB.
    assert rss[2] - rss[0] < 32, rss
    assert rss[2] - rss[1] < 12, rss
    # Latency, against peers measured in the same window: the valid requests sent between the
    # fuzz bodies. Measured: the fuzz bodies' p99 0.9-1.0x the valid ones'; the valid ones' p99
    # 3-5x their p50 on a shared, loaded 2-core machine.
    fuzz_p99, valid_p99 = _p99(seconds), _p99(valid)
    assert fuzz_p99 < 3 * valid_p99, (fuzz_p99, valid_p99, _slowest(latency))
    assert valid_p99 < 20 * float(np.median(valid)), (valid_p99, float(np.median(valid)))

    # Metric labels: values from fixed vocabularies only, none from a request (nothing with the
    # marker), and a bounded count that the second half of the fuzz barely moves (measured: 216
    # label values, 28 error codes, the same after 2,500 bodies as after 5,000).
    assert MARKER not in metrics_text
    final = labels[-1]
    assert final[("mlops_server_requests", "route")] <= KNOWN_ROUTES
    assert final[("mlops_server_requests", "method")] <= METHODS | {"OTHER"}
    assert all(re.fullmatch(r"[1-5][0-9][0-9]", s) for s in final[("mlops_server_requests", "status")])
    codes = final[("mlops_server_request_errors", "code")]
    assert all(re.fullmatch(r"[a-z][a-z0-9_]{2,40}", c) for c in codes) and len(codes) <= 40, codes
    counts = [sum(len(values) for values in snapshot.values()) for snapshot in labels]
    assert counts[2] <= 300 and counts[2] - counts[1] <= 5, counts


def _slowest(latency: dict[str, list[float]]) -> dict[str, float]:
    return {kind: max(values) for kind, values in latency.items()}
