"""A peer's client library against our server: Triton's `tritonclient`, which speaks the Open
Inference Protocol over gRPC and over HTTP with the binary data extension, as KServe and
Triton users do. Interoperability is proven on the real process, not assumed from the spec.

The client runs in its own interpreter: its generated gRPC code registers the protocol's
messages (`inference.*`) in protobuf's default pool, as our server's stubs do, and one process
cannot hold both; a client process never imports the server, so this costs users nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.server.conftest import REPO, Release, ServerProcess, expected

_CLIENT = r"""
import json, sys
import numpy as np
from tritonclient.utils import InferenceServerException

kind, target, model, rows_file, out_file = sys.argv[1:6]
X = np.load(rows_file)
out = {}
if kind == "grpc":
    import tritonclient.grpc as triton
    client = triton.InferenceServerClient(target)
    out["live"], out["ready"] = client.is_server_live(), client.is_server_ready()
    out["model_ready"] = client.is_model_ready(model)
    out["inputs"] = [i["name"] for i in client.get_model_metadata(model, as_json=True)["inputs"]]
    tensor = triton.InferInput("input-0", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    wanted = [triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")]
    result = client.infer(model, [tensor], outputs=wanted, request_id="t1")
    out["id"] = result.get_response().id
    out["answers"] = [[result.as_numpy("predict").tolist(), result.as_numpy("predict_proba").tolist()]]
    wrong = triton.InferInput("input-0", [2, X.shape[1] - 1], "FP64")
    wrong.set_data_from_numpy(np.ascontiguousarray(X[:2, 1:]))
else:
    import tritonclient.http as triton
    client = triton.InferenceServerClient(target)
    out["live"], out["ready"] = client.is_server_live(), client.is_server_ready()
    out["model_ready"] = client.is_model_ready(model)
    out["inputs"] = [i["name"] for i in client.get_model_metadata(model)["inputs"]]
    out["answers"] = []
    for binary_in in (True, False):
        tensor = triton.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary_in)
        wanted = [
            triton.InferRequestedOutput("predict", binary_data=True),
            triton.InferRequestedOutput("predict_proba", binary_data=not binary_in),
        ]
        result = client.infer(model, [tensor], outputs=wanted)
        answer = [result.as_numpy("predict").tolist(), result.as_numpy("predict_proba").tolist()]
        out["answers"].append(answer)
    # No outputs named: the client asks for every output in binary (binary_data_output).
    tensor = triton.InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X.astype(np.float32))
    out["fp32_predict"] = client.infer(model, [tensor]).as_numpy("predict").tolist()
    wrong = triton.InferInput("input-0", [1, X.shape[1]], "FP64")
    wrong.set_data_from_numpy(np.full((1, X.shape[1]), np.nan))
try:
    client.infer(model, [wrong])
    out["error"] = None
except InferenceServerException as exc:
    out["error"] = [exc.status(), exc.message()]
client.close()
with open(out_file, "w") as f:
    json.dump(out, f)
"""


def _run_client(kind: str, target: str, release: Release, X: np.ndarray, tmp_path: Path) -> dict[str, Any]:
    rows, out = tmp_path / f"{kind}-rows.npy", tmp_path / f"{kind}-out.json"
    np.save(rows, X)
    run = subprocess.run(
        [sys.executable, "-c", _CLIENT, kind, target, release.model_name, str(rows), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _check_common(result: dict[str, Any], release: Release, X: np.ndarray) -> None:
    frame = pd.DataFrame(X, columns=release.columns)
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["inputs"] == release.columns
    for labels, proba in result["answers"]:
        assert labels == expected(release, frame)
        np.testing.assert_allclose(proba, release.pipeline.predict_proba(frame), atol=1e-9)


def test_tritonclient_grpc(rf_process: ServerProcess, releases: dict[str, Release], tmp_path: Path) -> None:
    release = releases["rf"]
    X = release.frame.sample(64, random_state=4).to_numpy()
    result = _run_client("grpc", rf_process.grpc_target, release, X, tmp_path)
    _check_common(result, release, X)
    assert result["id"] == "t1"
    status, message = result["error"]
    assert status == "StatusCode.INVALID_ARGUMENT" and "shape" in message


def test_tritonclient_http_binary_and_json(
    rf_process: ServerProcess, releases: dict[str, Release], tmp_path: Path
) -> None:
    release = releases["rf"]
    X = release.frame.sample(200, random_state=5).to_numpy()
    result = _run_client("http", rf_process.url.removeprefix("http://"), release, X, tmp_path)
    _check_common(result, release, X)
    assert len(result["answers"]) == 2
    narrowed = pd.DataFrame(X.astype(np.float32).astype(np.float64), columns=release.columns)
    assert result["fp32_predict"] == expected(release, narrowed)
    status, message = result["error"]
    assert "400" in str(status) and "NaN" in message
