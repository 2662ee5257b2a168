"""Start-up, verification, safe loading, retries and readiness, on the real process where it matters."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from model.artifact import directory_checksum
from model.server import ServerSettings, create_app
from model.server.loader import LoadedRelease, LoadError, RetryPolicy, fetch_release, load_release
from model.spec import RegistrySettings
from tests.server.conftest import Release, copy_release, wait_live, wait_ready


def test_live_at_once_ready_only_after_load(releases: dict[str, Release]) -> None:
    release = releases["lr"]
    loading = threading.Event()
    may_finish = threading.Event()

    def slow_load() -> LoadedRelease:
        loading.set()
        assert may_finish.wait(30)
        return load_release(str(release.folder), None, None)

    app = create_app(ServerSettings(model_uri=str(release.folder), grpc_port=0), loader=slow_load)
    with TestClient(app) as client:
        assert loading.wait(30)
        assert client.get("/v2/health/live").status_code == 200
        first = client.get("/v2/health/ready")
        assert first.status_code == 503 and first.json() == {"ready": False, "reason": "loading"}
        refused = client.post("/invocations", json={"instances": [[0.1] * 20]})
        assert refused.status_code == 503 and refused.json()["error_code"] == "not_ready"
        may_finish.set()
        wait_ready(client)
        assert client.post("/invocations", json={"instances": [[0.1] * 20]}).status_code == 200


def test_ready_with_a_row_limit_below_the_example_size(releases: dict[str, Release]) -> None:
    # The self-test predicts on the model's 5-row input example, whatever the request limit.
    release = releases["rf"]
    app = create_app(ServerSettings(model_uri=str(release.folder), max_batch_rows=1, grpc_port=0))
    with TestClient(app) as client:
        wait_ready(client)
        row = release.frame.iloc[:1].to_numpy().tolist()
        assert client.post("/invocations", json={"instances": row}).status_code == 200
        assert client.post("/invocations", json={"instances": row * 2}).status_code == 413


def test_real_process_serves_the_precompiled_runtime(
    releases: dict[str, Release], process_factory: Any
) -> None:
    release = releases["lr"]
    server = process_factory(str(release.folder))
    wait_live(server)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        wait_ready(http)
        metrics = http.get("/metrics").text
        response = http.post("/invocations", json={"instances": [[0.1] * 20]})
    # The precompiled runtime is why start-up is fast: no compiled scikit-learn or SciPy
    # extension may have been loaded into the process.
    mapped = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "/sklearn/" not in mapped and "/scipy/" not in mapped
    assert response.status_code == 200
    assert response.headers["x-mlops-release-id"] == release.release_id
    assert f'release_id="{release.release_id}"' in metrics
    assert 'runtime="numpy-linear"' in metrics
    assert "mlops_server_model_load_seconds " in metrics
    assert server.stop() == 0
    assert "ready in" in server.log_text()
    assert "numpy-linear precompiled; reproduces scikit-learn" in server.log_text()


def test_corrupt_artifact_never_becomes_ready(
    releases: dict[str, Release], process_factory: Any, tmp_path: Path
) -> None:
    folder = copy_release(releases["rf"], tmp_path)
    model_file = folder / "model" / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    server = process_factory(str(folder))
    wait_live(server)
    deadline = time.monotonic() + 60
    while "model not loaded" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "load_failed"
        refused = http.post("/invocations", json={"instances": [[0.0] * 30]})
        assert refused.status_code == 503 and refused.json()["error_code"] == "not_ready"
        assert http.get("/v2/health/live").status_code == 200
    assert "checksum" in server.log_text()


def test_pickle_artifacts_are_refused(releases: dict[str, Release], tmp_path: Path) -> None:
    folder = copy_release(releases["lr"], tmp_path)
    mlmodel = folder / "model" / "MLmodel"
    mlmodel.write_text(
        mlmodel.read_text().replace("serialization_format: skops", "serialization_format: cloudpickle")
    )
    with pytest.raises(LoadError, match="pickle"):
        load_release(str(folder), directory_checksum(folder / "model"), None)


def test_missing_release_reports_why(tmp_path: Path) -> None:
    app = create_app(ServerSettings(model_uri=str(tmp_path / "nope"), grpc_port=0))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while app.failure is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get("/v2/health/ready").json() == {"ready": False, "reason": "load_failed"}
        assert client.get("/v2/health/live").status_code == 200
    assert "release.json" in app.failure


def test_release_uri_forms(
    releases: dict[str, Release], workdir: Path, registry: RegistrySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = releases["lr"]
    assert fetch_release(str(release.folder / "model"), workdir)[0] == release.folder
    assert fetch_release(f"file://{release.folder}", workdir)[0] == release.folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(registry.tracking_uri))
    # Training elsewhere in this process (another module on this pytest worker) leaves MLflow's
    # process-wide URIs set, and those win over the environment: the server process has none.
    import mlflow

    mlflow.set_tracking_uri(str(registry.tracking_uri))
    mlflow.set_registry_uri(str(registry.tracking_uri))
    for uri in (f"models:/{release.model_name}/1", f"models:/{release.model_name}@champion"):
        loaded = load_release(uri, None, None)
        assert (loaded.release_id, loaded.model_version) == (release.release_id, "1")
    with pytest.raises(LoadError, match="registry lookup"):
        fetch_release(f"models:/{release.model_name}/99", workdir)


class _FlakyS3:
    """Stands in for boto3: fails the first `failures` listings with a transient error."""

    def __init__(self, root: Path, prefix: str, failures: int, error: Exception) -> None:
        self.root, self.prefix, self.failures, self.error = root, prefix, failures, error
        self.calls = 0

    def get_paginator(self, _name: str) -> Any:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        return [
            {"Contents": [{"Key": f"{self.prefix}/{p.relative_to(self.root).as_posix()}"} for p in files]}
        ]

    def download_file(self, bucket: str, key: str, path: str) -> None:
        shutil.copyfile(self.root / key[len(self.prefix) + 1 :], path)


def test_s3_transient_errors_are_retried_with_backoff(
    releases: dict[str, Release], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    import model.data

    release = releases["rf"]
    prefix = f"{release.model_name}/{release.release_id}"
    flaky = _FlakyS3(release.folder, prefix, 2, EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    monkeypatch.setattr(model.data, "s3_client", lambda: flaky)
    sleeps: list[float] = []
    folder, _ = fetch_release(f"s3://bucket/{prefix}", tmp_path, RetryPolicy(attempts=4), sleeps.append)
    assert flaky.calls == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9
    assert folder.is_relative_to(tmp_path)
    assert directory_checksum(folder / "model") == directory_checksum(release.folder / "model")

    missing = ClientError(
        {"Error": {"Code": "NoSuchBucket"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "List"
    )
    permanent = _FlakyS3(release.folder, prefix, 10, missing)
    monkeypatch.setattr(model.data, "s3_client", lambda: permanent)
    with pytest.raises(LoadError, match="attempt 1/4"):
        fetch_release(f"s3://bucket/{prefix}", tmp_path, RetryPolicy(attempts=4), sleeps.append)
    outage = _FlakyS3(release.folder, prefix, 10, EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    monkeypatch.setattr(model.data, "s3_client", lambda: outage)
    with pytest.raises(LoadError, match="attempt 3/3"):
        fetch_release(f"s3://bucket/{prefix}", tmp_path, RetryPolicy(attempts=3), lambda _s: None)
    assert outage.calls == 3
