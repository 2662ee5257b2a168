"""Session services shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import MlflowService, S3Service, start_mlflow, start_seaweedfs

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n N` (scripts/test.sh) a worker takes whole modules, so that each module's
    fixtures (an engine's `pulumi up`, a trained release) are built once, and all the cluster
    tests take one worker, the only one that starts the local cluster."""
    from xdist.scheduler import LoadScopeScheduling

    class WholeModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/cluster" if module.startswith("tests/cluster/") else module

    return WholeModules(config, log)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    service = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, s3: S3Service) -> Iterator[MlflowService]:
    service = start_mlflow(tmp_path_factory.mktemp("mlflow"), s3)
    yield service
    service.stop()


@pytest.fixture
def s3_env(s3: S3Service, monkeypatch: pytest.MonkeyPatch) -> S3Service:
    """Point boto3 and MLflow in this process at the test SeaweedFS."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3
