"""A real Alertmanager, configured as the MonitoringStack configures it, drives the real trigger.

Alertmanager (upstream's, at the deployed version, from scripts/bootstrap-monitoring) receives
two drift alerts of one release through its API, groups them, and posts its webhook (payload
version 4) with the bearer token read from its credentials file; the trigger dispatches once to
the loopback stand-in of GitHub, naming both features.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from components.monitoring_config import RetrainRoute, alertmanager_config
from tests.monitoring.conftest import find_tools
from tests.retrain.conftest import WEBHOOK_TOKEN, FakeGitHub, TriggerProcess
from tests.services import ManagedProcess, free_port

pytestmark = pytest.mark.integration


def test_alertmanager_webhook_dispatches_once_per_release(
    trigger: TriggerProcess, gh: FakeGitHub, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(WEBHOOK_TOKEN + "\n")  # as a Secret mounts it; Alertmanager trims it
    route = RetrainRoute(f"{trigger.url}/alertmanager", str(token), ("MLOpsModelDrift",))
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(route, group_wait="1s")))
    port = free_port()
    alertmanager = ManagedProcess(
        "alertmanager",
        [
            str(find_tools().alertmanager),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        grace_s=5,
    )
    alertmanager.start()
    try:
        url = f"http://127.0.0.1:{port}"
        alertmanager.wait_http(f"{url}/-/ready", timeout_s=30)
        labels = {
            "alertname": "MLOpsModelDrift",
            "model_name": "cancer-am",
            "release_id": "0123456789ab",
            "namespace": "mlops-dev",
        }
        now = datetime.now(UTC).isoformat()
        alerts = [
            {
                "labels": {**labels, "feature": feature},
                "annotations": {"summary": f"mlops-dev/cancer-am: feature {feature} drifted"},
                "startsAt": now,
            }
            for feature in ("mean radius", "worst area")
        ]
        assert httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        while not gh.accepted() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gh.accepted(), f"no dispatch within 30 s\n{alertmanager.tail()}\n{trigger.log_text()}"
        time.sleep(1.5)  # nothing else follows the first notification
        (call,) = gh.all()
        payload = call.json()["client_payload"]
        assert payload["model_name"] == "cancer-am" and payload["release_id"] == "0123456789ab"
        assert payload["features"] == ["mean radius", "worst area"]
        assert payload["namespace"] == "mlops-dev" and payload["stack"] == "dev"
        assert "decision=dispatched model=cancer-am" in trigger.log_text()
    finally:
        alertmanager.stop()
