"""Every bad input gets its status, code and a message naming the field and row, for both models."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.server.conftest import Release

MARKER = "zq-secret-marker-9137"
"""Planted in bad inputs where a lazy server would echo them back."""


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[list[str], list[list[float]]], bytes | str | dict[str, Any]]
    status: int
    code: str
    field: str | None = None  # "<col0>" or "<col1>" refer to the signature's columns
    row: int | None = None
    content_type: str = "application/json"


def _split(columns: list[str], data: list[Any]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": data}}


def _with(data: list[list[Any]], row: int, col: int, value: Any) -> list[list[Any]]:
    out = [list(r) for r in data]
    out[row][col] = value
    return out


CASES = [
    Case("missing column", lambda c, d: _split(c[:-1], [r[:-1] for r in d]), 400, "missing_column", "<last>"),
    Case("renamed column", lambda c, d: _split([MARKER, *c[1:]], d), 400, "missing_column", "<col0>"),
    Case(
        "extra column",
        lambda c, d: _split([*c, MARKER], [[*r, 1.0] for r in d]),
        400,
        "unexpected_column",
        "<extra>",
    ),
    Case("duplicate column", lambda c, d: _split([*c[:-1], c[0]], d), 400, "duplicate_column", "<col0>"),
    Case("string value", lambda c, d: _split(c, _with(d, 2, 1, MARKER)), 400, "type_mismatch", "<col1>", 2),
    Case("numeric string", lambda c, d: _split(c, _with(d, 1, 0, "1.5")), 400, "type_mismatch", "<col0>", 1),
    Case("bool value", lambda c, d: _split(c, _with(d, 0, 1, True)), 400, "type_mismatch", "<col1>", 0),
    Case(
        "object value",
        lambda c, d: _split(c, _with(d, 1, 1, {"a": MARKER})),
        400,
        "type_mismatch",
        "<col1>",
        1,
    ),
    Case("array value", lambda c, d: _split(c, _with(d, 1, 0, [1.0])), 400, "type_mismatch", "<col0>", 1),
    Case("null value", lambda c, d: _split(c, _with(d, 2, 0, None)), 400, "null_value", "<col0>", 2),
    Case(
        "NaN literal",
        lambda c, d: json.dumps(_split(c, _with(d, 1, 1, float("nan")))),
        400,
        "non_finite",
        "<col1>",
        1,
    ),
    Case(
        "Infinity literal",
        lambda c, d: json.dumps(_split(c, _with(d, 2, 1, float("-inf")))),
        400,
        "non_finite",
        "<col1>",
        2,
    ),
    Case(
        "out of double range",
        lambda c, d: json.dumps(_split(c, d)).replace(str(d[1][0]), "1e999", 1),
        400,
        "out_of_range",
        "<col0>",
        1,
    ),
    Case(
        "huge integer",
        lambda c, d: json.dumps(_split(c, _with(d, 0, 0, 10**400))),
        400,
        "out_of_range",
        "<col0>",
        0,
    ),
    Case("ragged row", lambda c, d: _split(c, [d[0], d[1][:-1], d[2]]), 400, "ragged_row", None, 1),
    Case("row not an array", lambda c, d: _split(c, [d[0], MARKER]), 400, "invalid_row", None, 1),
    Case("empty data", lambda c, d: _split(c, []), 400, "empty_data"),
    Case("empty records", lambda c, d: {"dataframe_records": []}, 400, "empty_data"),
    Case("invalid json", lambda c, d: '{"dataframe_split": {"columns": [' + MARKER, 400, "invalid_json"),
    Case(
        "invalid utf-8",
        lambda c, d: b'{"instances": [[1.0, "\xff\xfe' + MARKER.encode() + b'"]]}',
        400,
        "invalid_utf8",
    ),
    Case("two formats", lambda c, d: {**_split(c, d), "instances": d}, 400, "multiple_formats", "instances"),
    Case("no format", lambda c, d: {"data": d}, 400, "unknown_key", "body[0]"),
    Case("unknown key", lambda c, d: {**_split(c, d), MARKER: 1}, 400, "unknown_key", "body[1]"),
    Case(
        "unknown split key",
        lambda c, d: {"dataframe_split": {"columns": c, "data": d, MARKER: 1}},
        400,
        "unknown_key",
        "dataframe_split[2]",
    ),
    Case(
        "unknown param",
        lambda c, d: {**_split(c, d), "params": {MARKER: 1}},
        400,
        "unknown_param",
        "params[0]",
    ),
    Case("top-level array", lambda c, d: "[1, 2, 3]", 400, "invalid_structure"),
    Case(
        "record missing field",
        lambda c, d: {
            "dataframe_records": [dict(zip(c, r, strict=True)) for r in d[:1]]
            + [dict(zip(c[1:], d[1][1:], strict=True))]
        },
        400,
        "missing_column",
        "<col0>",
        1,
    ),
    Case(
        "record extra field",
        lambda c, d: {"dataframe_records": [{**dict(zip(c, r, strict=True)), MARKER: 0} for r in d]},
        400,
        "unexpected_column",
        "<extra-key>",
        0,
    ),
    Case(
        "columnar ragged",
        lambda c, d: {"inputs": {name: [1.0, 2.0] if i else [1.0] for i, name in enumerate(c)}},
        400,
        "ragged_row",
        "<col1>",
    ),
    Case(
        "csv string",
        lambda c, d: ",".join(c) + "\n" + ",".join(["abc"] + ["1"] * (len(c) - 1)),
        400,
        "type_mismatch",
        "<col0>",
        0,
        "text/csv",
    ),
    Case(
        "csv nan",
        lambda c, d: ",".join(c) + "\n" + ",".join(["1"] * (len(c) - 1) + ["nan"]),
        400,
        "non_finite",
        "<last>",
        0,
        "text/csv",
    ),
    Case(
        "csv empty cell",
        lambda c, d: ",".join(c) + "\n" + ",".join([""] + ["1"] * (len(c) - 1)),
        400,
        "null_value",
        "<col0>",
        0,
        "text/csv",
    ),
    Case(
        "csv ragged",
        lambda c, d: ",".join(c) + "\n" + ",".join(["1"] * (len(c) - 1)),
        400,
        "ragged_row",
        None,
        0,
        "text/csv",
    ),
    Case(
        "csv renamed header",
        lambda c, d: ",".join(["zz", *c[1:]]) + "\n" + ",".join(["1"] * len(c)),
        400,
        "missing_column",
        "<col0>",
        None,
        "text/csv",
    ),
    Case(
        "wrong content type",
        lambda c, d: _split(c, d),
        415,
        "unsupported_media_type",
        None,
        None,
        "text/plain",
    ),
    Case(
        "form content type",
        lambda c, d: "a=1",
        415,
        "unsupported_media_type",
        None,
        None,
        "application/x-www-form-urlencoded",
    ),
    Case("too many rows", lambda c, d: _split(c, d * 200), 413, "too_many_rows"),
]


def _resolve(field: str | None, columns: list[str]) -> str | None:
    named = {
        "<col0>": columns[0],
        "<col1>": columns[1],
        "<last>": columns[-1],
        "<extra>": f"columns[{len(columns)}]",
        "<extra-key>": f"keys[{len(columns)}]",
    }
    return named.get(field or "", field)


def _send(client: TestClient, case: Case, columns: list[str], data: list[list[float]]) -> Any:
    body = case.build(columns, data)
    if isinstance(body, dict):
        body = orjson.dumps(body)
    return client.post("/invocations", content=body, headers={"content-type": case.content_type})


def check_error(response: Any, status: int, code: str, field: str | None, row: int | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert len(response.content) < 600
    assert MARKER not in response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert set(body) <= {"error_code", "message", "error", "field", "row"}
    if field is not None:
        assert body.get("field") == field, body
        message = body.get("message", body.get("error", ""))
        assert f"'{field}'" in message or field in message, body
    if row is not None:
        assert body.get("row") == row, body
        assert f"row {row}" in body.get("message", body.get("error", ""))
    return body


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_invocations(client: TestClient, release: Release, case: Case) -> None:
    columns = release.columns
    data = release.frame.head(3).to_numpy().tolist()
    response = _send(client, case, columns, data)
    body = check_error(response, case.status, case.code, _resolve(case.field, columns), case.row)
    assert response.headers["x-mlops-release-id"] == release.release_id
    if case.code in ("type_mismatch", "null_value", "non_finite", "out_of_range"):
        assert "expected" in body["message"]


def test_nan_answer_does_not_depend_on_estimator(
    clients: dict[str, TestClient], releases: dict[str, Release]
) -> None:
    # mlflow models serve answers 200 to a forest and 400 to a logistic regression here.
    answers = set()
    for key, client in clients.items():
        columns = releases[key].columns
        body = json.dumps(_split(columns, [[float("nan")] + [0.5] * (len(columns) - 1)]))
        response = client.post("/invocations", content=body, headers={"content-type": "application/json"})
        answers.add((response.status_code, response.json()["error_code"]))
    assert answers == {(400, "non_finite")}


def test_body_over_limit_is_refused_before_parsing(client: TestClient) -> None:
    # The in-process app is configured with a 1 MB limit; the body is not even JSON.
    response = client.post(
        "/invocations", content=b"x" * 1_100_000, headers={"content-type": "application/json"}
    )
    check_error(response, 413, "body_too_large", None, None)


def test_method_and_route_errors(client: TestClient) -> None:
    check_error(client.get("/invocations"), 405, "method_not_allowed", None, None)
    check_error(client.get("/nope"), 404, "not_found", None, None)


V2_CASES = [
    ("unknown key", {"inputs": [], "extra": 1}, 400, "unknown_key"),
    ("no inputs", {"inputs": []}, 400, "missing_data"),
    (
        "bad datatype",
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]},
        400,
        "type_mismatch",
    ),
    ("bad output", {"inputs": "<tensor>", "outputs": [{"name": "logits"}]}, 400, "unknown_output"),
]


@pytest.mark.parametrize("name,body,status,code", V2_CASES, ids=[c[0] for c in V2_CASES])
def test_bad_v2_requests(
    client: TestClient, release: Release, name: str, body: dict[str, Any], status: int, code: str
) -> None:
    width = len(release.columns)
    tensor = {"name": "input-0", "shape": [1, width], "datatype": "FP64", "data": [0.5] * width}
    if body.get("inputs") == "<tensor>":
        body = {**body, "inputs": [tensor]}
    response = client.post(f"/v2/models/{release.model_name}/infer", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    assert isinstance(response.json()["error"], str)


def test_v2_id_with_a_lone_surrogate_is_refused(client: TestClient, release: Release) -> None:
    """A JSON escape may hold half a UTF-16 pair; the answer echoes the id, and could not encode it."""
    width = len(release.columns)
    body = json.dumps(
        {
            "id": f"\ud800{MARKER}",
            "inputs": [{"name": "input-0", "shape": [1, width], "datatype": "FP64", "data": [0.5] * width}],
        }
    )
    response = client.post(
        f"/v2/models/{release.model_name}/infer", content=body, headers={"content-type": "application/json"}
    )
    check_error(response, 400, "invalid_structure", "id", None)


def test_v2_values_are_checked_like_invocations(client: TestClient, release: Release) -> None:
    width = len(release.columns)
    url = f"/v2/models/{release.model_name}/infer"
    cases = [
        (
            {"name": "input-0", "shape": [2, width], "datatype": "FP64", "data": [0.5] * (2 * width - 1)},
            "shape_mismatch",
            None,
            None,
        ),
        (
            {
                "name": "input-0",
                "shape": [2, width],
                "datatype": "FP64",
                "data": [0.5] * width + [None] + [0.5] * (width - 1),
            },
            "null_value",
            "<col0>",
            1,
        ),
        (
            {"name": "input-0", "shape": [1, width], "datatype": "INT64", "data": [0.5] * width},
            "type_mismatch",
            "<col0>",
            0,
        ),
        (
            {"name": "input-0", "shape": [1, width], "datatype": "FP32", "data": [1e39] * width},
            "out_of_range",
            "<col0>",
            0,
        ),
        (
            {"name": "input-0", "shape": [1, width + 1], "datatype": "FP64", "data": [0.5] * (width + 1)},
            "shape_mismatch",
            "inputs[0]",
            None,
        ),
    ]
    for tensor, code, field, row in cases:
        response = client.post(url, json={"inputs": [tensor]})
        check_error(response, 400, code, _resolve(field, release.columns), row)


def test_large_v2_bodies_are_checked_like_small_ones(client: TestClient, release: Release) -> None:
    """Bodies past a few KB take the simdjson path (numbers straight into numpy); a bad value
    deep inside gets the same error as in a small body, and a good one the same answer."""
    width = len(release.columns)
    rows = 300
    base = release.frame.sample(rows, replace=True, random_state=9).to_numpy()
    url = f"/v2/models/{release.model_name}/infer"

    def body(data: list[Any], **tensor: Any) -> bytes:
        spec = {"name": "input-0", "shape": [rows, width], "datatype": "FP64", "data": data, **tensor}
        return json.dumps({"inputs": [spec]}, allow_nan=True).encode()

    flat: list[Any] = base.ravel().tolist()
    good = client.post(url, content=body(flat), headers={"content-type": "application/json"})
    assert good.status_code == 200
    assert len(body(flat)) > 8192
    nested = client.post(url, content=body(base.tolist()), headers={"content-type": "application/json"})
    assert nested.json()["outputs"] == good.json()["outputs"]
    at = 250 * width + 1  # row 250, the second column
    cases: list[tuple[Any, str, str | None, int | None]] = [
        (None, "null_value", "<col1>", 250),
        (True, "type_mismatch", "<col1>", 250),
        (MARKER, "type_mismatch", "<col1>", 250),
        ({"a": 1}, "type_mismatch", "<col1>", 250),
        (float("nan"), "non_finite", "<col1>", 250),
        (1e999, "non_finite", "<col1>", 250),
        ([0.5], "type_mismatch", "<col1>", 250),
    ]
    for value, code, field, row in cases:
        data = list(flat)
        data[at] = value
        response = client.post(url, content=body(data), headers={"content-type": "application/json"})
        check_error(response, 400, code, _resolve(field, release.columns), row)
    short = client.post(url, content=body(flat[:-1]), headers={"content-type": "application/json"})
    check_error(short, 400, "shape_mismatch", "inputs[0]", None)
    # A key given twice: the last one counts, as in a small body (orjson's rule).
    twice = body(flat).replace(b'"datatype": "FP64"', b'"datatype": "BYTES", "datatype": "FP64"')
    assert client.post(url, content=twice, headers={"content-type": "application/json"}).status_code == 200
    ints = client.post(
        url, content=body(flat, datatype="INT64"), headers={"content-type": "application/json"}
    )
    check_error(ints, 400, "type_mismatch", _resolve("<col0>", release.columns), 0)


def test_large_dataframe_split_bodies_are_checked_like_small_ones(
    client: TestClient, release: Release
) -> None:
    frame = release.frame.sample(300, replace=True, random_state=8)
    columns = release.columns
    rows: list[list[Any]] = frame.to_numpy().tolist()

    def post(payload: dict[str, Any]) -> Any:
        content = json.dumps(payload, allow_nan=True).encode()
        assert len(content) > 8192
        return client.post("/invocations", content=content, headers={"content-type": "application/json"})

    want = release.pipeline.predict(frame).tolist()
    reordered = frame[list(reversed(columns))]
    for payload in (
        _split(columns, rows),
        _split(list(reversed(columns)), reordered.to_numpy().tolist()),
        {"dataframe_split": {"columns": columns, "data": rows, "index": list(range(300))}},
        {**_split(columns, rows), "params": {"probabilities": True}},
    ):
        response = post(payload)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == want
    assert "probabilities" in post({**_split(columns, rows), "params": {"probabilities": True}}).json()
    cases: list[tuple[list[list[Any]], str, str | None, int | None]] = [
        (_with(rows, 250, 1, None), "null_value", "<col1>", 250),
        (_with(rows, 250, 1, False), "type_mismatch", "<col1>", 250),
        (_with(rows, 250, 1, [1.0]), "type_mismatch", "<col1>", 250),
        (_with(rows, 250, 1, float("inf")), "non_finite", "<col1>", 250),
        ([*rows[:250], rows[250][:-1], *rows[251:]], "ragged_row", None, 250),
        # Same count of numbers, rows of the wrong lengths: still ragged.
        ([*rows[:250], rows[250][:-1], [*rows[251], rows[250][-1]], *rows[252:]], "ragged_row", None, 250),
    ]
    for data, code, field, row in cases:
        check_error(post(_split(columns, data)), 400, code, _resolve(field, columns), row)
    index = post({"dataframe_split": {"columns": columns, "data": rows, "index": [0]}})
    check_error(index, 400, "invalid_structure", "index", None)
    extra = post({**_split(columns, rows), MARKER: 1})
    check_error(extra, 400, "unknown_key", "body[1]", None)
