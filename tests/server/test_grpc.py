"""The Open Inference Protocol over gRPC: the same answers as JSON, the same checks and limits,
errors as gRPC status codes with the machine-readable code in trailing metadata, metrics
counted under protocol="grpc", and the drain of a real process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import GRPCInferenceServiceStub
from starlette.testclient import TestClient

from model.server.grpc_service import ERROR_CODE_KEY
from tests.server.conftest import Release, ServerProcess, expected, grpc_target, wait_live, wait_ready
from tests.server.test_bad_inputs import MARKER


@pytest.fixture()
def stub(client: TestClient) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_target(client)) as channel:
        yield GRPCInferenceServiceStub(channel)


def _frame(release: Release, X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=release.columns)


def _raw_request(
    release: Release, X: np.ndarray, datatype: str = "FP64", **kwargs: Any
) -> pb.ModelInferRequest:
    dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[datatype]
    request = pb.ModelInferRequest(model_name=release.model_name, **kwargs)
    request.inputs.add(name="input-0", datatype=datatype, shape=list(X.shape))
    request.raw_input_contents.append(np.ascontiguousarray(X, dtype=dtype).tobytes())
    return request


def _error(call: Any) -> tuple[grpc.StatusCode, str, str]:
    """(status, message, mlops error code) of a failed call."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    codes = [value for key, value in error.trailing_metadata() or () if key == ERROR_CODE_KEY]
    return error.code(), error.details(), codes[0] if codes else ""


def test_health_and_metadata(stub: GRPCInferenceServiceStub, release: Release) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=release.model_name)).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=release.model_name))
    assert [t.name for t in meta.inputs] == release.columns
    assert {t.datatype for t in meta.inputs} == {"FP64"}
    assert [t.name for t in meta.outputs] == ["predict", "predict_proba"]
    assert meta.properties["release_id"] == release.release_id
    assert "binary_tensor_data" in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
    status, _, code = _error(lambda: stub.ModelReady(pb.ModelReadyRequest(name="other-model")))
    assert (status, code) == (grpc.StatusCode.NOT_FOUND, "model_not_found")
    status, _, code = _error(
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=release.model_name, version="999"))
    )
    assert (status, code) == (grpc.StatusCode.NOT_FOUND, "model_not_found")


@pytest.mark.parametrize("rows", [1, 25, 500])
def test_raw_and_typed_contents_answer_like_json(
    client: TestClient, stub: GRPCInferenceServiceStub, release: Release, rows: int
) -> None:
    X = release.frame.sample(rows, replace=True, random_state=rows).to_numpy()
    want = expected(release, _frame(release, X))
    request = _raw_request(release, X, id="g1")
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    response = stub.ModelInfer(request)
    assert response.id == "g1" and response.model_name == release.model_name
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    assert response.outputs[0].datatype == "INT64" and list(response.outputs[0].shape) == [rows]
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() == want
    np.testing.assert_allclose(
        np.frombuffer(response.raw_output_contents[1], dtype="<f8").reshape(rows, 2),
        release.pipeline.predict_proba(_frame(release, X)),
        atol=1e-9,
    )
    # Typed contents in, typed contents out; and the same rows over JSON.
    typed = pb.ModelInferRequest(model_name=release.model_name)
    typed.inputs.add(name="x", datatype="FP64", shape=list(X.shape)).contents.fp64_contents.extend(X.ravel())
    answer = stub.ModelInfer(typed)
    assert not answer.raw_output_contents
    assert list(answer.outputs[0].contents.int64_contents) == want
    over_json = client.post(
        f"/v2/models/{release.model_name}/infer",
        json={
            "inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}]
        },
    )
    assert over_json.json()["outputs"][0]["data"] == want


def test_per_column_tensors_and_narrow_types(stub: GRPCInferenceServiceStub, release: Release) -> None:
    X = np.round(release.frame.head(6).to_numpy(), 2)
    request = pb.ModelInferRequest(model_name=release.model_name)
    for j, name in reversed(list(enumerate(release.columns))):
        request.inputs.add(name=name, datatype="FP32", shape=[6])
        request.raw_input_contents.append(np.ascontiguousarray(X[:, j], dtype="<f4").tobytes())
    response = stub.ModelInfer(request)
    want = expected(release, _frame(release, X.astype(np.float32).astype(np.float64)))
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() == want
    ints = np.arange(2 * len(release.columns)).reshape(2, -1)
    response = stub.ModelInfer(_raw_request(release, ints, "INT32"))
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() == expected(
        release, _frame(release, ints.astype(np.float64))
    )


def _bad_requests(release: Release) -> list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]]:
    width = len(release.columns)
    ok = np.full((2, width), 0.5)
    nan = ok.copy()
    nan[1, 3] = np.inf
    cases: list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]] = []

    def add(name: str, request: pb.ModelInferRequest, status: grpc.StatusCode, code: str) -> None:
        cases.append((name, request, status, code))

    other = _raw_request(release, ok)
    other.model_name = MARKER
    add("wrong model", other, grpc.StatusCode.NOT_FOUND, "model_not_found")
    add("infinity", _raw_request(release, nan), grpc.StatusCode.INVALID_ARGUMENT, "non_finite")
    short = _raw_request(release, ok)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-3]
    add("bytes short of the shape", short, grpc.StatusCode.INVALID_ARGUMENT, "shape_mismatch")
    wide = _raw_request(release, np.full((2, width + 1), 0.5))
    add("one column too many", wide, grpc.StatusCode.INVALID_ARGUMENT, "shape_mismatch")
    huge = _raw_request(release, ok)
    huge.inputs[0].shape[0] = 10**9
    add("too many rows", huge, grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_rows")
    extra = _raw_request(release, ok)
    extra.raw_input_contents.append(b"\0" * 8)
    add("raw contents for no input", extra, grpc.StatusCode.INVALID_ARGUMENT, "invalid_structure")
    mixed = _raw_request(release, ok)
    mixed.inputs[0].contents.fp64_contents.append(1.0)
    add("raw and typed at once", mixed, grpc.StatusCode.INVALID_ARGUMENT, "invalid_structure")
    wrong_field = pb.ModelInferRequest(model_name=release.model_name)
    wrong_field.inputs.add(name="x", datatype="FP64", shape=[1, width]).contents.fp32_contents.extend(
        [0.5] * width
    )
    add("values in the wrong contents field", wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "type_mismatch")
    text = pb.ModelInferRequest(model_name=release.model_name)
    text.inputs.add(name="x", datatype="BYTES", shape=[1, width]).contents.bytes_contents.append(
        MARKER.encode()
    )
    add("BYTES input", text, grpc.StatusCode.INVALID_ARGUMENT, "type_mismatch")
    param = _raw_request(release, ok)
    param.parameters[MARKER].bool_param = True
    add("unknown parameter", param, grpc.StatusCode.INVALID_ARGUMENT, "unknown_param")
    string_param = _raw_request(release, ok)
    string_param.parameters["probabilities"].string_param = MARKER
    add("non-boolean probabilities", string_param, grpc.StatusCode.INVALID_ARGUMENT, "invalid_params")
    output = _raw_request(release, ok)
    output.outputs.add(name=MARKER)
    add("unknown output", output, grpc.StatusCode.INVALID_ARGUMENT, "unknown_output")
    renamed = pb.ModelInferRequest(model_name=release.model_name)
    for name in [MARKER, *release.columns[1:]]:
        renamed.inputs.add(name=name, datatype="FP64", shape=[1]).contents.fp64_contents.append(0.5)
    add("renamed column", renamed, grpc.StatusCode.INVALID_ARGUMENT, "missing_column")
    empty = pb.ModelInferRequest(model_name=release.model_name)
    add("no inputs", empty, grpc.StatusCode.INVALID_ARGUMENT, "missing_data")
    long_id = _raw_request(release, ok, id="x" * 300)
    add("long id", long_id, grpc.StatusCode.INVALID_ARGUMENT, "invalid_structure")
    return cases


def test_malformed_requests_get_status_codes(
    client: TestClient, stub: GRPCInferenceServiceStub, release: Release
) -> None:
    def errors() -> float:
        total = 0.0
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("mlops_server_request_errors_total{") and 'protocol="grpc"' in line:
                total += float(line.split()[-1])
        return total

    before = errors()
    cases = _bad_requests(release)
    for name, request, status, code in cases:
        got_status, message, got_code = _error(lambda request=request: stub.ModelInfer(request))
        assert (got_status, got_code) == (status, code), (name, message)
        assert MARKER not in message and len(message) < 400, name
    assert errors() == before + len(cases)
    # The server is unharmed.
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_message_size_limit_before_parsing(stub: GRPCInferenceServiceStub, release: Release) -> None:
    # The in-process app takes 1,000,000 bytes; gRPC refuses a bigger message before parsing it.
    big = np.zeros((500, 300))
    request = pb.ModelInferRequest(model_name=release.model_name)
    request.inputs.add(name="x", datatype="FP64", shape=list(big.shape))
    request.raw_input_contents.append(big.tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metrics_count_grpc_apart(
    client: TestClient, stub: GRPCInferenceServiceStub, release: Release
) -> None:
    def count(line_start: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
        return 0.0

    ok = 'mlops_server_requests_total{method="RPC",protocol="grpc",route="ModelInfer",status="OK"}'
    raw = 'mlops_server_request_encodings_total{encoding="raw",protocol="grpc"}'
    before_ok, before_raw = count(ok), count(raw)
    stub.ModelInfer(_raw_request(release, np.full((3, len(release.columns)), 0.5)))
    assert count(ok) == before_ok + 1
    assert count(raw) == before_raw + 1


@pytest.mark.slow
def test_grpc_drains_on_sigterm(releases: dict[str, Release], process_factory: Any) -> None:
    """SIGTERM: gRPC reports unready at once, keeps answering in-flight and new calls during the
    grace period, then stops with the process, which exits 0."""
    release = releases["rf"]
    server: ServerProcess = process_factory(str(release.folder), "--drain-seconds", "4")
    wait_live(server)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        wait_ready(http)
    X = release.frame.head(50).to_numpy()
    want = expected(release, _frame(release, X))
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal answered
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.ModelInfer(_raw_request(release, X), timeout=5)
                except grpc.RpcError as exc:
                    # Refused once the server stops accepting (a call caught in that instant is
                    # cancelled by gRPC's shutdown): never a wrong or broken answer.
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        failures.append(f"{exc.code()}: {exc.details()}")
                    return
                if np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() != want:
                    failures.append("wrong answer")
                answered += 1

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.5)
        before = answered
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready:
            assert time.monotonic() < deadline, "still ready after SIGTERM"
            time.sleep(0.01)
        time.sleep(0.3)
        assert answered > before, "no answers during the grace period"
        assert server.proc.wait(30) == 0
        stop.set()
        thread.join(10)
    assert not failures, failures[:5]
