"""The V2 binary data extension over HTTP: same answers as JSON, every malformed body a precise 4xx."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from model.server.tensors import split_binary_body
from tests.server.conftest import Release, expected
from tests.server.test_bad_inputs import MARKER, check_error
from tests.server.test_bad_inputs import _resolve as resolve_field

HEADER = "Inference-Header-Content-Length"


def binary_request(
    header: dict[str, Any], *blobs: bytes, declared: int | str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A body of the binary data extension: the JSON header, then the raw tensors."""
    head = orjson.dumps(header)
    length = len(head) if declared is None else declared
    return head + b"".join(blobs), {HEADER: str(length), "content-type": "application/octet-stream"}


def split_response(response: Any) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers[HEADER])
    return orjson.loads(response.content[:length]), response.content[length:]


def _tensor(values: np.ndarray, datatype: str = "FP64", name: str = "input-0") -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(values.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": values.nbytes},
    }


def _rows(release: Release, n: int) -> np.ndarray:
    return release.frame.sample(n, replace=True, random_state=n).to_numpy()


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_binary_inputs_answer_like_json(client: TestClient, release: Release, rows: int) -> None:
    X = _rows(release, rows)
    url = f"/v2/models/{release.model_name}/infer"
    json_answer = client.post(
        url, json={"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP64", "data": X.tolist()}]}
    )
    body, headers = binary_request({"id": "b1", "inputs": [_tensor(X)]}, X.astype("<f8").tobytes())
    response = client.post(url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    # Inputs in binary, outputs in JSON unless asked for: the answer is plain JSON.
    assert HEADER.lower() not in response.headers
    assert response.json()["outputs"] == json_answer.json()["outputs"]
    assert response.json()["outputs"][0]["data"] == expected(release, _frame(release, X))
    assert response.json()["id"] == "b1"


def test_binary_outputs_and_probabilities(client: TestClient, release: Release) -> None:
    X = _rows(release, 9)
    url = f"/v2/models/{release.model_name}/infer"
    header = {
        "inputs": [_tensor(X)],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}],
    }
    response = client.post(url, **_post(binary_request(header, X.tobytes())))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    head, tail = split_response(response)
    predict, proba = head["outputs"]
    assert predict["datatype"] == "INT64" and predict["shape"] == [9]
    assert predict["parameters"] == {"binary_data_size": 72} and "data" not in predict
    assert np.frombuffer(tail, dtype="<i8").tolist() == expected(release, _frame(release, X))
    np.testing.assert_allclose(
        np.reshape(proba["data"], (9, 2)), release.pipeline.predict_proba(_frame(release, X)), atol=1e-9
    )
    # binary_data_output asks for every output in binary, in the order they are listed.
    header = {"inputs": [_tensor(X)], "parameters": {"binary_data_output": True, "probabilities": True}}
    response = client.post(url, **_post(binary_request(header, X.tobytes())))
    head, tail = split_response(response)
    assert [o["name"] for o in head["outputs"]] == ["predict", "predict_proba"]
    assert len(tail) == 9 * 8 + 9 * 2 * 8
    np.testing.assert_allclose(
        np.frombuffer(tail[72:], dtype="<f8").reshape(9, 2),
        release.pipeline.predict_proba(_frame(release, X)),
        atol=1e-9,
    )
    # JSON inputs may ask for binary outputs too.
    response = client.post(
        url,
        json={
            "inputs": [
                {"name": "x", "shape": [9, X.shape[1]], "datatype": "FP64", "data": X.ravel().tolist()}
            ],
            "parameters": {"binary_data_output": True},
        },
    )
    head, tail = split_response(response)
    assert np.frombuffer(tail, dtype="<i8").tolist() == expected(release, _frame(release, X))


def test_narrower_datatypes_and_per_column_tensors(client: TestClient, release: Release) -> None:
    X = np.round(_rows(release, 4), 3)
    url = f"/v2/models/{release.model_name}/infer"
    as32 = X.astype("<f4")
    response = client.post(url, **_post(binary_request({"inputs": [_tensor(as32, "FP32")]}, as32.tobytes())))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected(
        release, _frame(release, as32.astype(np.float64))
    )
    ints = np.arange(4 * X.shape[1], dtype="<i8").reshape(4, -1)
    response = client.post(url, **_post(binary_request({"inputs": [_tensor(ints, "INT64")]}, ints.tobytes())))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected(
        release, _frame(release, ints.astype(np.float64))
    )
    # One tensor per column, in reverse order, half of them binary and half JSON.
    tensors, blobs = [], []
    for j, name in reversed(list(enumerate(release.columns))):
        column = np.ascontiguousarray(X[:, j])
        if j % 2:
            tensors.append({**_tensor(column, name=name)})
            blobs.append(column.tobytes())
        else:
            tensors.append({"name": name, "shape": [4], "datatype": "FP64", "data": column.tolist()})
    response = client.post(url, **_post(binary_request({"inputs": tensors}, *blobs)))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected(release, _frame(release, X))


@pytest.mark.parametrize("padding", range(8))
def test_answers_do_not_depend_on_where_the_tensors_fall(
    client: TestClient, release: Release, padding: int
) -> None:
    """The binary section starts at any byte of the body (the JSON header's length), and a
    tensor after a 4-byte one starts off an 8-byte boundary: the same rows, the same answers."""
    X = np.round(_rows(release, 7), 3)
    url = f"/v2/models/{release.model_name}/infer"
    want = expected(release, _frame(release, X))
    body, headers = binary_request({"inputs": [_tensor(X)]}, X.tobytes())
    head = int(headers[HEADER])
    padded = body[:head] + b" " * padding + body[head:]
    response = client.post(url, content=padded, headers={**headers, HEADER: str(head + padding)})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == want
    first, rest = release.columns[0], list(enumerate(release.columns))[1:]
    narrow = X[:, 0].astype("<f4")  # 7 x 4 bytes: every FP64 tensor after it is misaligned
    tensors, blobs = [_tensor(narrow, "FP32", first)], [narrow.tobytes()]
    for j, name in rest:
        tensors.append(_tensor(np.ascontiguousarray(X[:, j]), name=name))
        blobs.append(np.ascontiguousarray(X[:, j]).tobytes())
    response = client.post(url, **_post(binary_request({"inputs": tensors}, *blobs)))
    assert response.status_code == 200, response.text
    X32 = X.copy()
    X32[:, 0] = narrow
    assert response.json()["outputs"][0]["data"] == expected(release, _frame(release, X32))


@pytest.mark.parametrize("header", [1, 7, 64, 100])
def test_a_body_in_chunks_is_joined_with_its_binary_section_aligned(header: int) -> None:
    values = np.arange(50, dtype="<f8")
    body = b"h" * header + values.tobytes()
    for cuts in ([], [header], [1, header + 3], [header - 1, header + 8, len(body) - 1]):
        edges = [0, *cuts, len(body)]
        chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
        head, section = split_binary_body(chunks, str(header).encode())
        tensor = np.frombuffer(section, dtype="<f8")
        assert head == body[:header] and tensor.tolist() == values.tolist(), cuts
        assert tensor.ctypes.data % 64 == 0 and tensor.flags.writeable, cuts


def _frame(release: Release, X: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(X, columns=release.columns)


def _post(request: tuple[bytes, dict[str, str]]) -> dict[str, Any]:
    body, headers = request
    return {"content": body, "headers": headers}


def _bad_cases(width: int) -> list[tuple[str, dict[str, Any], bytes, Any, int, str, str | None, int | None]]:
    """(name, header, binary section, declared header length or None, status, code, field, row)"""
    ok = np.full((2, width), 0.5)
    nan = ok.copy()
    nan[1, 1] = np.nan
    tensor = _tensor(ok)
    return [
        (
            "header length not a number",
            {"inputs": [tensor]},
            ok.tobytes(),
            "x12",
            400,
            "invalid_header",
            None,
            None,
        ),
        (
            "header length past the body",
            {"inputs": [tensor]},
            ok.tobytes(),
            10**6,
            400,
            "invalid_header",
            None,
            None,
        ),
        ("header length zero", {"inputs": [tensor]}, ok.tobytes(), 0, 400, "invalid_header", None, None),
        (
            "header length cuts the JSON",
            {"inputs": [tensor]},
            ok.tobytes(),
            5,
            400,
            "invalid_json",
            None,
            None,
        ),
        (
            "size disagrees with the shape",
            {"inputs": [{**tensor, "parameters": {"binary_data_size": ok.nbytes - 8}}]},
            ok.tobytes()[:-8],
            None,
            400,
            "shape_mismatch",
            "inputs[0]",
            None,
        ),
        (
            "bytes left over",
            {"inputs": [tensor]},
            ok.tobytes() + MARKER.encode(),
            None,
            400,
            "invalid_structure",
            "binary_data_size",
            None,
        ),
        (
            "size past the section",
            {"inputs": [{**tensor, "parameters": {"binary_data_size": ok.nbytes + 8}}]},
            ok.tobytes(),
            None,
            400,
            "invalid_structure",
            "binary_data_size",
            None,
        ),
        (
            "negative size",
            {"inputs": [{**tensor, "parameters": {"binary_data_size": -8}}]},
            ok.tobytes(),
            None,
            400,
            "invalid_params",
            "binary_data_size",
            None,
        ),
        (
            "data and binary",
            {"inputs": [{**tensor, "data": ok.ravel().tolist()}]},
            ok.tobytes(),
            None,
            400,
            "invalid_structure",
            "inputs[0]",
            None,
        ),
        ("NaN in a raw tensor", {"inputs": [tensor]}, nan.tobytes(), None, 400, "non_finite", "<col1>", 1),
        (
            "FP64 bytes into an INT32 column view",
            {"inputs": [{**tensor, "datatype": "INT32", "parameters": {"binary_data_size": ok.nbytes}}]},
            ok.tobytes(),
            None,
            400,
            "shape_mismatch",
            "inputs[0]",
            None,
        ),
        (
            "BYTES datatype",
            {"inputs": [{**tensor, "datatype": "BYTES"}]},
            ok.tobytes(),
            None,
            400,
            "type_mismatch",
            "inputs[0]",
            None,
        ),
        (
            "unknown output parameter",
            {"inputs": [tensor], "outputs": [{"name": "predict", "parameters": {"classification": 2}}]},
            ok.tobytes(),
            None,
            400,
            "unknown_param",
            "outputs[0]",
            None,
        ),
        (
            "non-boolean binary_data",
            {"inputs": [tensor], "outputs": [{"name": "predict", "parameters": {"binary_data": MARKER}}]},
            ok.tobytes(),
            None,
            400,
            "invalid_params",
            "outputs[0]",
            None,
        ),
        (
            "unknown request parameter",
            {"inputs": [tensor], "parameters": {MARKER: True}},
            ok.tobytes(),
            None,
            400,
            "unknown_param",
            "parameters[0]",
            None,
        ),
        (
            # Shape says 10^9 rows: refused from the shape, before any byte is read as a number.
            "too many rows",
            {"inputs": [{**tensor, "shape": [10**9, width]}]},
            ok.tobytes(),
            None,
            413,
            "too_many_rows",
            None,
            None,
        ),
    ]


def test_malformed_binary_requests(client: TestClient, release: Release) -> None:
    url = f"/v2/models/{release.model_name}/infer"
    for name, header, section, declared, status, code, field, row in _bad_cases(len(release.columns)):
        response = client.post(url, **_post(binary_request(header, section, declared=declared)))
        body = check_error(response, status, code, resolve_field(field, release.columns), row)
        assert "error" in body, name


def test_binary_body_rules_outside_the_json(client: TestClient, release: Release) -> None:
    url = f"/v2/models/{release.model_name}/infer"
    X = np.full((1, len(release.columns)), 0.5)
    # binary_data_size without the header: there is no binary section to read it from.
    response = client.post(url, json={"inputs": [_tensor(X)]})
    check_error(response, 400, "invalid_header", "binary_data_size", None)
    body, headers = binary_request({"inputs": [_tensor(X)]}, X.tobytes())
    response = client.post(url, content=body, headers={**headers, "content-type": "text/csv"})
    check_error(response, 415, "unsupported_media_type", None, None)
    # The body limit holds before anything is parsed (the in-process app takes 1,000,000 bytes).
    big = np.zeros((400, 400))
    response = client.post(url, **_post(binary_request({"inputs": [_tensor(big)]}, big.tobytes())))
    check_error(response, 413, "body_too_large", None, None)
    # /invocations has no binary form: the header changes nothing there.
    as_json = {"content-type": "application/json"}
    with_header = client.post("/invocations", content=body, headers={**headers, **as_json})
    without = client.post("/invocations", content=body, headers=as_json)
    assert with_header.status_code == without.status_code == 400, with_header.text
    assert with_header.json() == without.json()


def test_binary_requests_are_counted(client: TestClient, release: Release) -> None:
    X = np.full((1, len(release.columns)), 0.5)

    def count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('mlops_server_request_encodings_total{encoding="binary",protocol="http"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    response = client.post(
        f"/v2/models/{release.model_name}/infer",
        **_post(binary_request({"inputs": [_tensor(X)]}, X.tobytes())),
    )
    assert response.status_code == 200
    assert count() == before + 1
