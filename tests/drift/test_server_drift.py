"""Drift at serve time: the real app's /metrics against the traffic it was sent."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from model.drift import score
from model.server import ServerApp, ServerSettings, create_app
from model.server.__main__ import app as server_main
from tests.drift.conftest import TrainedRelease
from tests.server.conftest import grpc_target, start_server, wait_live, wait_ready
from tests.services import free_port

DRIFT_FAMILIES = {
    "mlops_server_drift_psi",
    "mlops_server_drift_ks",
    "mlops_server_drift_window_rows",
    "mlops_server_prediction_drift_psi",
    "mlops_server_prediction_share",
}


@contextmanager
def serving(folder: Path, window_rows: int = 5000, grpc_port: int = 0) -> Iterator[TestClient]:
    settings = ServerSettings(model_uri=str(folder), grpc_port=grpc_port, drift_window_rows=window_rows)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def predict(client: TestClient | httpx.Client, frame: pd.DataFrame) -> np.ndarray:
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"])


def send(client: TestClient, frame: pd.DataFrame, sizes: tuple[int, ...] = (1, 7, 50, 120)) -> np.ndarray:
    """`frame` in requests of varying sizes; the predictions in row order."""
    out, start, i = [], 0, 0
    while start < len(frame):
        size = sizes[i % len(sizes)]
        out.append(predict(client, frame.iloc[start : start + size]))
        start, i = start + size, i + 1
    return np.concatenate(out)


def drift_metrics(client: TestClient | httpx.Client) -> dict[str, dict[str, float]]:
    """{family: {label value ("" without labels): value}} for the drift families that are present."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name in DRIFT_FAMILIES:
            found[family.name] = {next(iter(s.labels.values()), ""): s.value for s in family.samples}
    return found


def test_reference_like_traffic_keeps_psi_and_ks_low(classifier: TrainedRelease) -> None:
    with serving(classifier.folder) as client:
        send(client, classifier.features.iloc[:2000])
        metrics = drift_metrics(client)
    assert metrics["mlops_server_drift_window_rows"] == {"": 2000}
    assert set(metrics["mlops_server_drift_psi"]) == set(classifier.features.columns)
    assert max(metrics["mlops_server_drift_psi"].values()) < 0.05
    assert max(metrics["mlops_server_drift_ks"].values()) < 0.06
    assert metrics["mlops_server_prediction_drift_psi"][""] < 0.02
    shares = metrics["mlops_server_prediction_share"]
    assert set(shares) == {"0", "1"} and sum(shares.values()) == pytest.approx(1.0)


def test_shifted_traffic_raises_exactly_the_shifted_features(classifier: TrainedRelease) -> None:
    with serving(classifier.folder) as client:
        send(client, classifier.shifted(["x1", "x6"]).iloc[:1500])
        metrics = drift_metrics(client)
    psi, ks = metrics["mlops_server_drift_psi"], metrics["mlops_server_drift_ks"]
    assert {name for name, value in psi.items() if value > 0.2} == {"x1", "x6"}
    assert {name for name, value in ks.items() if value > 0.1} == {"x1", "x6"}
    assert max(v for name, v in psi.items() if name not in ("x1", "x6")) < 0.05


def test_the_window_is_bounded_and_old_rows_leave(classifier: TrainedRelease) -> None:
    reference, shifted = classifier.features, classifier.shifted(["x3"])
    with serving(classifier.folder, window_rows=300) as client:
        for start in range(0, 600, 150):
            send(client, reference.iloc[start : start + 150], sizes=(1, 13, 50, 400))
            assert drift_metrics(client)["mlops_server_drift_window_rows"][""] == min(300, start + 150)
        send(client, shifted.iloc[1000:1300])
        after_shift = drift_metrics(client)
        send(client, reference.iloc[2000:2300])
        after_return = drift_metrics(client)
    assert after_shift["mlops_server_drift_window_rows"][""] == 300
    assert after_shift["mlops_server_drift_psi"]["x3"] > 0.5
    assert after_return["mlops_server_drift_window_rows"][""] == 300
    assert max(after_return["mlops_server_drift_psi"].values()) < 0.2
    assert after_return["mlops_server_drift_ks"]["x3"] < 0.1


def test_unscraped_traffic_keeps_at_most_a_window_of_rows_queued(classifier: TrainedRelease) -> None:
    with serving(classifier.folder, window_rows=300) as client:
        app = client.app
        assert isinstance(app, ServerApp) and app.drift is not None
        for start in range(0, 2000, 50):
            predict(client, classifier.features.iloc[start : start + 50])
            assert app.drift._pending_rows < 300 + 50
        assert drift_metrics(client)["mlops_server_drift_window_rows"][""] == 300


def test_window_zero_exports_no_drift_series(classifier: TrainedRelease) -> None:
    with serving(classifier.folder, window_rows=0) as client:
        send(client, classifier.features.iloc[:100])
        assert drift_metrics(client) == {}
        assert "mlops_server_requests_total" in client.get("/metrics").text


def test_rejected_requests_do_not_enter_the_window(classifier: TrainedRelease) -> None:
    columns = list(classifier.features.columns)
    good = classifier.features.iloc[:10]
    with serving(classifier.folder) as client:
        send(client, good)
        rows = good.to_numpy().tolist()
        bad_bodies: list[Any] = [
            {"dataframe_split": {"columns": ["nope", *columns[1:]], "data": rows}},
            {"dataframe_split": {"columns": columns, "data": [row[:-1] for row in rows]}},
            {"dataframe_split": {"columns": columns, "data": [["x"] * len(columns)]}},
            {"instances": "not rows"},
        ]
        for body in bad_bodies:
            assert client.post("/invocations", json=body).status_code == 400
        nan_csv = ",".join(columns) + "\n" + ",".join(["NaN"] * len(columns)) + "\n"
        response = client.post("/invocations", content=nan_csv, headers={"content-type": "text/csv"})
        assert response.status_code == 400
        assert drift_metrics(client)["mlops_server_drift_window_rows"][""] == 10
        send(client, good.iloc[:1])
        assert drift_metrics(client)["mlops_server_drift_window_rows"][""] == 11


@pytest.mark.parametrize("which", ["classifier", "regressor"])
@pytest.mark.parametrize(
    "sizes",
    [
        # many requests per fold, joined first
        (1, 7, 30),
        # a few requests per fold, copied one by one, the oldest one's first rows skipped (and
        # queued requests whose rows newer ones replace dropped before any fold)
        (150, 260),
    ],
)
def test_window_figures_equal_model_drift_scoring_the_same_rows(
    which: str, sizes: tuple[int, ...], trained: dict[str, TrainedRelease]
) -> None:
    release = trained[which]
    # 842 rows through a 333-row window, scraped (so folded) after every 280: the ring wraps.
    shifted = release.shifted([release.features.columns[2]])
    mixed = pd.concat([release.features.iloc[:400], shifted.iloc[:442]])
    with serving(release.folder, window_rows=333) as client:
        parts = []
        for start in range(0, len(mixed), 280):
            parts.append(send(client, mixed.iloc[start : start + 280], sizes=sizes))
            metrics = drift_metrics(client)
        predictions = np.concatenate(parts)
    expected = score(release.profile, mixed.iloc[-333:], predictions[-333:])
    assert metrics["mlops_server_drift_window_rows"][""] == 333
    for feature in expected.features:
        assert metrics["mlops_server_drift_psi"][feature.name] == pytest.approx(feature.psi, abs=1e-12)
        assert metrics["mlops_server_drift_ks"][feature.name] == pytest.approx(feature.ks, abs=1e-12)
    assert expected.prediction is not None
    assert metrics["mlops_server_prediction_drift_psi"][""] == pytest.approx(
        expected.prediction.psi, abs=1e-12
    )
    shares = metrics["mlops_server_prediction_share"]
    assert sum(shares.values()) == pytest.approx(1.0)
    if which == "regressor":
        bins = len(release.profile.prediction.frequencies)  # type: ignore[union-attr]
        assert set(shares) == {str(i) for i in range(bins)}
    else:
        labels, counts = np.unique(predictions[-333:], return_counts=True)
        assert shares == pytest.approx({str(k): c / 333 for k, c in zip(labels, counts, strict=True)})


def test_grpc_predictions_enter_the_window_too(classifier: TrainedRelease) -> None:
    import grpc
    from open_inference.grpc import protocol as pb
    from open_inference.grpc.service import GRPCInferenceServiceStub

    X = classifier.shifted(["x0"]).iloc[:300].to_numpy()
    request = pb.ModelInferRequest(model_name="drift-classifier")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(X.shape))
    request.raw_input_contents.append(np.ascontiguousarray(X, dtype="<f8").tobytes())
    with serving(classifier.folder, grpc_port=free_port()) as client:
        with grpc.insecure_channel(grpc_target(client)) as channel:
            GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        metrics = drift_metrics(client)
    assert metrics["mlops_server_drift_window_rows"] == {"": 300}
    assert {name for name, value in metrics["mlops_server_drift_psi"].items() if value > 0.2} == {"x0"}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("delete", "reference_profile.json does not exist"),
        ("corrupt", "is not readable JSON"),
        ("rename", "features differ from the model's signature"),
    ],
)
def test_a_release_without_a_usable_profile_serves_without_drift_metrics(
    damage: str, reason: str, classifier: TrainedRelease, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "release"
    shutil.copytree(classifier.folder, folder)
    path = folder / "reference_profile.json"
    if damage == "delete":
        path.unlink()
    elif damage == "corrupt":
        path.write_text("{ not json")
    else:
        path.write_text(path.read_text().replace('"x3"', '"renamed"'))
    with caplog.at_level(logging.INFO, logger="mlops.server"), serving(folder) as client:
        assert len(send(client, classifier.features.iloc[:20])) == 20
        assert drift_metrics(client) == {}
    off = [r.getMessage() for r in caplog.records if "drift monitoring off" in r.getMessage()]
    assert len(off) == 1 and reason in off[0]


def test_the_server_process_takes_the_window_from_the_environment(
    classifier: TrainedRelease, tmp_path: Path
) -> None:
    server = start_server(
        str(classifier.folder), tmp_path, "--grpc-port", "0", env={"MLOPS_DRIFT_WINDOW_ROWS": "40"}
    )
    try:
        wait_live(server)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            wait_ready(http)
            predict(http, classifier.features.iloc[:100])
            predict(http, classifier.features.iloc[100:101])
            assert drift_metrics(http)["mlops_server_drift_window_rows"] == {"": 40}
    finally:
        assert server.stop() == 0


def test_a_negative_window_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        server_main(["--model-uri", "unused", "--drift-window-rows", "-1"])
    assert info.value.code == 2
    assert "drift_window_rows=-1" in capsys.readouterr().err
