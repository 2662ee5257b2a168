"""The MLflow scoring protocol and the Open Inference Protocol, driven through the real app."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from tests.server.conftest import Release, expected, split_body


def _rows(release: Release, n: int = 25) -> pd.DataFrame:
    return release.frame.sample(n, random_state=1)


def test_every_json_format_and_csv_match_scikit_learn(client: TestClient, release: Release) -> None:
    frame = _rows(release)
    want = expected(release, frame)
    records = frame.to_dict(orient="records")
    bodies = [
        split_body(frame),
        {
            "dataframe_split": {
                "columns": list(frame.columns),
                "data": frame.to_numpy().tolist(),
                "index": list(range(25)),
            }
        },
        {"dataframe_records": records},
        {"instances": records},
        {"instances": frame.to_numpy().tolist()},
        {"inputs": {c: frame[c].tolist() for c in frame.columns}},
        {"inputs": frame.to_numpy().tolist()},
        # Columns in another order are matched by name.
        split_body(frame[list(reversed(frame.columns))]),
    ]
    for body in bodies:
        response = client.post("/invocations", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": want}
        assert response.headers["x-mlops-release-id"] == release.release_id
        assert response.headers["x-mlops-model-version"]
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    response = client.post("/invocations", content=buffer.getvalue(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": want}


def test_probabilities_on_request(client: TestClient, release: Release) -> None:
    frame = _rows(release, 10)
    want = release.pipeline.predict_proba(frame)
    for response in (
        client.post("/invocations?probabilities=true", json=split_body(frame)),
        client.post("/invocations", json={**split_body(frame), "params": {"probabilities": True}}),
    ):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["classes"] == [0, 1]
        np.testing.assert_allclose(body["probabilities"], want, rtol=0, atol=1e-9)
        assert body["predictions"] == expected(release, frame)


def test_health_version_and_mlflow_ping(client: TestClient, release: Release) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/ping").status_code == 200
    version = client.get("/version").json()
    assert version["release_id"] == release.release_id
    expected_runtime = "numpy-linear" if release.key == "lr" else "onnxruntime-tree-ensemble"
    assert version["runtime"] == expected_runtime, version["runtime_reason"]


def test_open_inference_protocol(client: TestClient, release: Release) -> None:
    frame = _rows(release, 7)
    name = release.model_name
    meta = client.get(f"/v2/models/{name}")
    assert meta.status_code == 200
    assert [i["name"] for i in meta.json()["inputs"]] == release.columns
    version = meta.json()["versions"][0]
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    values = frame.to_numpy()
    tensor = {
        "name": "input-0",
        "shape": list(values.shape),
        "datatype": "FP64",
        "data": values.ravel().tolist(),
    }
    response = client.post(f"/v2/models/{name}/infer", json={"id": "r1", "inputs": [tensor]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == name and body["model_version"] == version
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [7], "data": expected(release, frame)}
    ]
    assert response.headers["x-mlops-release-id"] == release.release_id
    # Nested data, one tensor per column, probabilities, and the versioned route.
    nested = {**tensor, "data": values.tolist()}
    per_column = [
        {"name": c, "shape": [7], "datatype": "FP64", "data": frame[c].tolist()}
        for c in reversed(frame.columns)
    ]
    for inputs in ([nested], per_column):
        response = client.post(
            f"/v2/models/{name}/versions/{version}/infer",
            json={"inputs": inputs, "outputs": [{"name": "predict"}, {"name": "predict_proba"}]},
        )
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["predict"]["data"] == expected(release, frame)
        assert outputs["predict_proba"]["shape"] == [7, 2]
        np.testing.assert_allclose(
            np.reshape(outputs["predict_proba"]["data"], (7, 2)),
            release.pipeline.predict_proba(frame),
            atol=1e-9,
        )
    assert client.get("/v2/models/other-model").status_code == 404
    missing = client.post("/v2/models/other-model/infer", json={"inputs": [tensor]})
    assert missing.status_code == 404 and missing.json()["error_code"] == "model_not_found"


@pytest.mark.parametrize("rows", [1, 3, 500])
def test_batch_sizes(client: TestClient, release: Release, rows: int) -> None:
    frame = release.frame.sample(rows, replace=True, random_state=rows)
    response = client.post("/invocations", json=split_body(frame))
    assert response.status_code == 200
    assert response.json()["predictions"] == expected(release, frame)
