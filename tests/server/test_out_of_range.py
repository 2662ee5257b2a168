"""Out-of-range numbers get the same kind of answer whatever the estimator.

The contract (docs/serving.md, "Request limits"): a value is served when it is finite and within
+-FLOAT32_MAX (3.4028235e38), whatever the column's type; the answer is then finite and equal to
scikit-learn's for the same input. Anything beyond (`1e308`, `1e309`, `10**400`) is refused with
400 `out_of_range` naming the row and the column, for every estimator the toolkit trains, in JSON,
CSV and binary tensors alike. Without the bound the answers differed by estimator: forests
served 1e308 where scikit-learn refuses it, linear regressions answered null, gradient boosting
answered a number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from model.artifact import ReleaseMetadata, load_sklearn_model
from model.estimators import ESTIMATORS
from model.runtime import LinearRuntime
from model.server import ServerSettings, create_app
from model.server.batching import check_finite
from model.server.errors import RequestError
from model.server.schema import FLOAT32_MAX, Column, InputSchema
from model.spec import RegistrySettings, TrainingSpec
from tests.server.conftest import train_releases, wait_ready
from tests.server.test_binary_tensors import binary_request

pytestmark = pytest.mark.slow

REFUSED = ("1e308", "-1e308", "1e309", "-1e999", "3.5e38", str(10**400))
SERVED = (str(2**63 - 1), str(2**64), str(-(2**63)), "3.4028234663852886e38", "-3.4028234663852886e38")
PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 500},
    "random_forest": {"n_estimators": 15},
    "hist_gradient_boosting": {"max_iter": 15},
}
DATASETS = {"classification": "sklearn:breast_cancer", "regression": "sklearn:diabetes"}


def _key(estimator: str, task: str) -> str:
    return f"{task[0]}-{estimator}".replace("_", "-")


@pytest.fixture(scope="module")
def models(
    workdir: Path, registry: RegistrySettings
) -> Iterator[dict[str, tuple[TestClient, Any, list[str]]]]:
    """Every (estimator, task) of model/estimators.py trained, served in process: client,
    scikit-learn pipeline, signature columns."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    columns = {
        "classification": list(load_breast_cancer(as_frame=True).data.columns),
        "regression": list(load_diabetes(as_frame=True).data.columns),
    }
    specs = {
        _key(name, task): TrainingSpec(
            model_name=_key(name, task),
            dataset=DATASETS[task],
            target="target",
            task=task,
            estimator=name,
            params=PARAMS.get(name, {}),
        )
        for name, task in ESTIMATORS
    }
    folders = train_releases(specs, workdir, registry)
    served: dict[str, tuple[TestClient, Any, list[str]]] = {}
    try:
        for key, folder in folders.items():
            meta = ReleaseMetadata.from_json((folder / "release.json").read_text())
            pipeline = load_sklearn_model(folder / "model", meta.estimator, meta.task, meta.model_sha256)
            client = TestClient(create_app(ServerSettings(model_uri=str(folder), grpc_port=0)))
            client.__enter__()
            served[key] = (client, pipeline, columns[meta.task])
        for client, _, _ in served.values():
            wait_ready(client)
        yield served
    finally:
        for client, _, _ in served.values():
            client.__exit__(None, None, None)


def _row(columns: list[str], column: int, literal: str) -> list[str]:
    """A typical row (0.01 everywhere) as JSON number texts, `literal` in `column`."""
    texts = ["0.01"] * len(columns)
    texts[column] = literal
    return texts


def _answers(client: TestClient, model: str, columns: list[str], column: int, literal: str) -> list[Any]:
    """The answers to one row holding `literal` in `column`: MLflow JSON, CSV, V2 JSON and, for a
    finite double, V2 binary tensors. Each is (status, error code, field, predictions)."""
    texts = _row(columns, column, literal)
    header = ",".join(f'"{c}"' for c in columns)
    split = f'{{"dataframe_split": {{"columns": {json.dumps(columns)}, "data": [[{",".join(texts)}]]}}}}'
    v2 = (
        f'{{"inputs": [{{"name": "input-0", "shape": [1, {len(columns)}], "datatype": "FP64", '
        f'"data": [{",".join(texts)}]}}]}}'
    )
    url = f"/v2/models/{model}/infer"
    requests = [
        (
            "/invocations" + ("?probabilities=true" if model.startswith("c-") else ""),
            split.encode(),
            {"content-type": "application/json"},
        ),
        ("/invocations", f"{header}\n{','.join(texts)}".encode(), {"content-type": "text/csv"}),
        (url, v2.encode(), {"content-type": "application/json"}),
    ]
    value = float(literal)
    if np.isfinite(value):
        X = np.array([[float(t) for t in texts]])
        tensor = {"name": "input-0", "shape": [1, len(columns)], "datatype": "FP64"}
        requests.append(
            (
                url,
                *binary_request(
                    {"inputs": [{**tensor, "parameters": {"binary_data_size": 8 * X.size}}]}, X.tobytes()
                ),
            )
        )
    answers = []
    for path, body, headers in requests:
        response = client.post(path, content=body, headers=headers)
        if response.status_code != 200:
            error = response.json()
            answers.append((response.status_code, error["error_code"], error.get("field"), error.get("row")))
            continue
        if path == url and "inference-header-content-length" in response.headers:
            length = int(response.headers["inference-header-content-length"])
            predictions = json.loads(response.content[:length])["outputs"][0]["data"]
        elif path == url:
            predictions = response.json()["outputs"][0]["data"]
        else:
            out = response.json()
            predictions = [out["predictions"], out.get("probabilities")]
        answers.append((200, None, None, predictions))
    return answers


@pytest.mark.parametrize("literal", REFUSED)
def test_values_beyond_the_served_range_are_refused_by_every_estimator(
    models: dict[str, tuple[TestClient, Any, list[str]]], literal: str
) -> None:
    for key, (client, _, columns) in models.items():
        for column in (0, len(columns) - 1):
            answers = _answers(client, key, columns, column, literal)
            assert len(answers) >= 3
            for answer in answers:
                assert answer == (400, "out_of_range", columns[column], 0), (key, literal, answer)


@pytest.mark.parametrize("literal", SERVED)
def test_values_within_the_range_get_scikit_learns_answer_from_every_estimator(
    models: dict[str, tuple[TestClient, Any, list[str]]], literal: str
) -> None:
    for key, (client, pipeline, columns) in models.items():
        for column in (0, len(columns) - 1):
            frame = pd.DataFrame([[float(t) for t in _row(columns, column, literal)]], columns=columns)
            want = pipeline.predict(frame)
            answers = _answers(client, key, columns, column, literal)
            assert len(answers) == 4
            for status, code, _, predictions in answers:
                assert status == 200, (key, literal, code)
                got = predictions[0] if isinstance(predictions[0], list) else predictions
                if key.startswith("c-"):
                    assert got == want.tolist(), (key, literal)
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f"{key} {literal}")
                    assert np.isfinite(got).all()
            probabilities = answers[0][3][1]
            if probabilities is not None:
                assert np.isfinite(probabilities).all()
                np.testing.assert_allclose(
                    probabilities, pipeline.predict_proba(frame), rtol=1e-9, atol=1e-12
                )


def test_a_prediction_that_overflows_is_refused_not_sent_as_null() -> None:
    """Within the input range a linear model can still overflow (a feature scaled by a tiny
    standard deviation); scikit-learn then refuses the scaled input, and so does the server."""
    runtime = LinearRuntime(np.array([2.0]), np.array([0.0]), np.zeros(1), np.array([1e-300]), None)
    check_finite(runtime.predict(np.array([[1.0], [2.0]])))
    with np.errstate(over="ignore"):
        overflowed = runtime.predict(np.array([[1.0], [3e38]]))
    with pytest.raises(RequestError) as info:
        check_finite(overflowed)
    assert (info.value.status, info.value.code, info.value.row) == (400, "out_of_range", 1)


@pytest.mark.parametrize("rows", [1, 4, 200])  # 20, 80 and 4,000 values: both sides of the small-block path
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_block_range_check_refuses_every_value_beyond_the_bound_wherever_it_sits(
    rows: int, dtype: type[np.floating[Any]]
) -> None:
    schema = InputSchema(tuple(Column(f"f{i}", "double") for i in range(20)))
    block = np.random.default_rng(0).normal(size=(rows, 20)).astype(dtype)
    assert schema.check_block(block)
    bound = np.float64(FLOAT32_MAX)
    for bad in (np.nan, np.inf, -np.inf, 1e308, -3.5e38):
        if dtype is np.float32 and abs(bad) < np.inf:
            continue  # not representable in float32
        for row, column in ((0, 0), (rows - 1, 19), (rows // 2, 7)):
            wrong = block.copy()
            wrong[row, column] = bad
            assert not schema.check_block(wrong), (bad, row, column)
    edge = block.copy()
    edge[0, 0], edge[-1, -1] = bound, -bound
    assert schema.check_block(edge)
    beyond = np.nextafter(bound, np.inf)  # the next float64 past the bound, at either end
    if dtype is np.float64:
        for row, column in ((0, 0), (rows - 1, 19)):
            wrong = block.copy()
            wrong[row, column] = beyond if column else -beyond
            assert not schema.check_block(wrong), (row, column)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_values_within_the_bound_pass_whatever_their_sum_of_squares(
    dtype: type[np.floating[Any]],
) -> None:
    """Large blocks are cleared by one sum of squares where it can; values whose squares sum past
    the bound's square (or past float32, whose squares overflow sooner) are each still within it."""
    schema = InputSchema(tuple(Column(f"f{i}", "double") for i in range(20)))
    big = np.full((100, 20), 3e38 if dtype is np.float64 else 1e30, dtype=dtype)
    big[::2] *= -1
    assert schema.check_block(big)
    # Blocks that are not C-ordered (no single pass over them) take the exact check.
    wrong = big.copy()
    wrong[3, 8] = -np.inf
    for view in (np.asfortranarray, lambda block: block[:, ::2]):
        assert not view(big).flags.c_contiguous
        assert schema.check_block(view(big))
        assert not schema.check_block(view(wrong))
