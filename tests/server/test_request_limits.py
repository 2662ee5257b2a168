"""The per-request time limit on the real process: a slow prediction gets 504 (gRPC
DEADLINE_EXCEEDED), requests that arrive meanwhile are answered between its slices, its
remaining rows are dropped, and a body that never arrives gets 408.

The slow prediction is honest: a 500-tree forest on noisy data (deep trees) asked for enough
rows, sent as binary tensors, that predicting them all takes about five times the limit, by
its time per row measured in this run on the same runtime (at most 180,000 rows, which fill the
server's default body limit: at a fast moment of the CI machine a 200-tree forest's 180,000
rows took 1.8 s, under the premise of twice the limit).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import GRPCInferenceServiceStub

from model.server import ServerSettings
from model.server.grpc_service import ERROR_CODE_KEY
from model.server.loader import load_release
from model.spec import RegistrySettings, TrainingSpec
from tests.server.conftest import (
    ServerProcess,
    metric_samples,
    running_server,
    train_releases,
)

pytestmark = pytest.mark.slow

LIMIT = 1.0
"""--max-request-seconds of the server under test."""
SLICE = 512
"""--batch-combined-rows: the most rows of one model call."""
WIDTH = 10


@dataclass(frozen=True)
class SlowForest:
    folder: Path
    model_name: str
    row_seconds: float
    """Model time per row in this process (the best of three runs)."""

    @property
    def rows(self) -> int:
        """Rows whose prediction takes about five times the limit."""
        return min(180_000, math.ceil(5 * LIMIT / self.row_seconds))


@pytest.fixture(scope="module")
def slow_forest(workdir: Path, registry: RegistrySettings) -> SlowForest:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=WIDTH, n_informative=6, flip_y=0.3, random_state=5)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(WIDTH)])
    frame["label"] = y
    csv = workdir / "slow-forest.csv"
    frame.to_csv(csv, index=False)
    spec = TrainingSpec(
        model_name="slow-forest",
        dataset=str(csv),
        target="label",
        task="classification",
        estimator="random_forest",
        params={"n_estimators": 500},
    )
    folder = train_releases({"slow": spec}, workdir, registry)["slow"]
    runtime = load_release(str(folder), None, None).runtime
    sample = np.random.default_rng(1).normal(size=(4000, WIDTH))
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        runtime.predict(sample)
        best = min(best, time.perf_counter() - started)
    forest = SlowForest(folder, "slow-forest", best / len(sample))
    # The premise: the whole request takes well over the limit, even at this process's speed.
    assert forest.rows * forest.row_seconds > 2 * LIMIT, forest
    return forest


@pytest.fixture(scope="module")
def limited(slow_forest: SlowForest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        str(slow_forest.folder),
        tmp_path_factory.mktemp("limited"),
        "--batch-combined-rows",
        str(SLICE),
        "--max-batch-rows",
        str(slow_forest.rows),
        env={"MLOPS_MAX_REQUEST_SECONDS": str(LIMIT)},  # the variable the serving component sets
    ) as server:
        yield server


def _rows_to_model(http: httpx.Client) -> float:
    """Rows handed to the model so far (the batch-rows histogram's sum)."""
    return sum(metric_samples(http, "mlops_server_batch_rows_sum").values())


def _errors(http: httpx.Client, code: str) -> float:
    return sum(
        v for k, v in metric_samples(http, "mlops_server_request_errors_total").items() if ("code", code) in k
    )


def _binary_infer(forest: SlowForest, rows: int) -> tuple[bytes, dict[str, str]]:
    X = np.random.default_rng(2).normal(size=(rows, WIDTH))
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [rows, WIDTH],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": X.nbytes},
                }
            ]
        }
    )
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + X.tobytes(), headers


def test_a_slow_request_gets_504_and_others_are_answered_meanwhile(
    limited: ServerProcess, slow_forest: SlowForest
) -> None:
    url = f"/v2/models/{slow_forest.model_name}/infer"
    small = {"inputs": [{"name": "input-0", "shape": [1, WIDTH], "datatype": "FP64", "data": [0.5] * WIDTH}]}
    body, headers = _binary_infer(slow_forest, slow_forest.rows)
    big: dict[str, Any] = {}

    with httpx.Client(base_url=limited.url, timeout=30) as http:
        before = _rows_to_model(http)

        def send_big() -> None:
            with httpx.Client(base_url=limited.url, timeout=60) as own:
                big["response"] = own.post(url, content=body, headers=headers)
            big["done"] = time.monotonic()

        thread = threading.Thread(target=send_big)
        thread.start()
        deadline = time.monotonic() + 30
        while _rows_to_model(http) < before + SLICE:  # its first slice is in the model
            assert time.monotonic() < deadline and thread.is_alive(), (
                "the big request never reached the model"
            )
            time.sleep(0.005)
        answered: list[float] = []
        while thread.is_alive():
            response = http.post(url, json=small)
            assert response.status_code == 200, response.text
            answered.append(time.monotonic())
        thread.join()

        response = big["response"]
        assert response.status_code == 504, response.text
        error = response.json()
        assert error["error_code"] == "deadline_exceeded" and "--max-request-seconds" in error["error"]
        assert set(error) == {"error", "error_code"}
        # Requests sent while the slow one was in the model were answered before its 504:
        # each waited for at most one slice, not for the slow request's rows.
        assert sum(t < big["done"] for t in answered) >= 3, (len(answered), answered, big["done"])

        # Its remaining slices were dropped: after one more request (served once the slice in the
        # model, if any, is done), nothing more of it reaches the model.
        assert http.post(url, json=small).status_code == 200
        settled = _rows_to_model(http)
        time.sleep(LIMIT)
        assert _rows_to_model(http) == settled
        slow_rows = settled - before - (len(answered) + 1)
        assert SLICE <= slow_rows < slow_forest.rows, (slow_rows, slow_forest.rows)
        assert _errors(http, "deadline_exceeded") == 1


def test_a_slow_grpc_call_gets_deadline_exceeded(limited: ServerProcess, slow_forest: SlowForest) -> None:
    X = np.random.default_rng(3).normal(size=(slow_forest.rows, WIDTH))
    request = pb.ModelInferRequest(model_name=slow_forest.model_name)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(X.shape))
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(limited.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=60)
    error = info.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert (ERROR_CODE_KEY, "deadline_exceeded") in tuple(error.trailing_metadata() or ())
    with httpx.Client(base_url=limited.url, timeout=10) as http:
        counted = metric_samples(http, "mlops_server_requests_total")
    assert any(("status", "DEADLINE_EXCEEDED") in key and ("route", "ModelInfer") in key for key in counted)


def test_a_body_that_never_arrives_gets_408_and_a_closed_connection(limited: ServerProcess) -> None:
    host, port = limited.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10 * LIMIT + 10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            received += chunk
    assert time.monotonic() - started >= LIMIT * 0.9
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:300]
    assert b"connection: close" in head.lower()
    assert orjson.loads(payload)["error_code"] == "body_timeout"


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_request_seconds=0"):
        ServerSettings(model_uri="x", max_request_seconds=0)
