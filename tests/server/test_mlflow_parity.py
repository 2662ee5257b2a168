"""MLflow's own scoring client gets the same predictions from our server as from `mlflow models serve`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from tests.server.conftest import Release
from tests.services import ManagedProcess, free_port


def _mlflow_serve(model_dir: Path, log: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    if not mlflow_cli.exists():
        raise AssertionError(f"the mlflow CLI is missing next to {sys.executable}")
    # mlflow runs uvicorn in a child process: ManagedProcess stops the whole session group.
    process = ManagedProcess(
        "mlflow models serve",
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        log,
        env={
            **os.environ,
            # mlflow execs `uvicorn` by name: the venv's bin must come first on PATH.
            "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{log.parent / 'mlflow-serve.db'}",
        },
        grace_s=20,
    )
    process.start()
    return process, port


@pytest.mark.slow
def test_mlflow_client_sees_the_same_predictions(
    releases: dict[str, Release], process_factory: Any, tmp_path: Path
) -> None:
    started = []
    try:
        for key in ("lr", "rf"):
            release = releases[key]
            mlflow_proc, mlflow_port = _mlflow_serve(release.folder / "model", tmp_path / f"mlflow-{key}.log")
            ours = process_factory(str(release.folder))
            started.append((release, mlflow_proc, mlflow_port, ours))
        for release, mlflow_proc, mlflow_port, ours in started:
            theirs_client = ScoringServerClient("127.0.0.1", mlflow_port)
            ours_client = ScoringServerClient("127.0.0.1", int(ours.url.rsplit(":", 1)[1]))
            theirs_client.wait_server_ready(timeout=120, scoring_server_proc=mlflow_proc.proc)
            ours_client.wait_server_ready(timeout=60, scoring_server_proc=ours.proc)
            frame = release.frame.sample(60, random_state=5)
            theirs = theirs_client.invoke(frame).get_predictions()
            mine = ours_client.invoke(frame).get_predictions()
            assert mine.equals(theirs), (mine.head(), theirs.head())
            assert mine.iloc[:, 0].tolist() == release.pipeline.predict(frame).tolist()
            # The records orientation MLflow's client also produces.
            records = ours_client.invoke(frame.to_dict(orient="records")).get_predictions()
            assert records.equals(theirs)
    finally:
        for _, mlflow_proc, _, _ in started:
            mlflow_proc.stop()
