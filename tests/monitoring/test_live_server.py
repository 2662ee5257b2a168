"""The rules and the dashboard against the real model server, real Prometheus and real Alertmanager.

* Every metric name the rules and the dashboard query is one the real server exports.
* Debian's Prometheus runs the bundled scrape job (its relabelling, on the targets Kubernetes
  discovery would hand it, given through a file) and the stack's rules against the real server;
  Alertmanager runs the bundled configuration. Traffic like the reference keeps the drift alert
  quiet; shifted traffic makes it fire, Alertmanager posts it (bearer token from the credentials
  file) to the real retrain trigger, which makes exactly one repository_dispatch to a loopback
  stand-in of GitHub's API, and nothing for Alertmanager's repeats.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from components.alert_rules import DRIFT_ALERT, AlertThresholds, rule_groups
from components.dashboard import build_dashboard, dashboard_expressions
from components.monitoring_config import RetrainRoute, alertmanager_config, prometheus_config, to_yaml
from tests.monitoring.conftest import LiveServer, Tools, write_yaml
from tests.retrain.conftest import REPOSITORY, WEBHOOK_TOKEN, FakeGitHub, TriggerProcess, start_trigger
from tests.services import ManagedProcess, free_port

NS = "mlops-live"
SYNTHETIC = {"up"}
"""Series Prometheus makes itself for every target."""
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")


def metric_names(expr: str) -> set[str]:
    """Metric names of an expression: every selector here is written `name{...}`."""
    return set(_SELECTOR.findall(expr))


def _used_names() -> set[str]:
    exprs = [r["expr"] for g in rule_groups(AlertThresholds(), [NS]) for r in g["rules"]]
    exprs += dashboard_expressions(build_dashboard([NS], AlertThresholds(), "live"))
    return set().union(*(metric_names(e) for e in exprs))


def _exported(server: LiveServer) -> set[str]:
    return {s.name for family in text_string_to_metric_families(server.scrape()) for s in family.samples}


def test_every_metric_the_rules_and_dashboard_use_is_exported(live_server: LiveServer) -> None:
    live_server.predict(live_server.rows.iloc[:300])
    used = _used_names()
    assert {
        "mlops_server_requests_total",
        "mlops_server_request_duration_seconds_bucket",
        "mlops_server_model_info",
        "mlops_server_ready",
        "mlops_server_drift_psi",
        "mlops_server_drift_ks",
        "mlops_server_drift_window_rows",
        "mlops_server_prediction_drift_psi",
        "mlops_server_prediction_share",
    } <= used
    missing = used - SYNTHETIC - _exported(live_server)
    assert not missing, f"queried but not exported by the model server: {sorted(missing)}"


def _discovered_targets(server_port: int) -> list[dict[str, Any]]:
    """What Kubernetes pod discovery hands Prometheus for three pods: only the first is scraped."""
    pod = {
        "__meta_kubernetes_namespace": NS,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(server_port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_label_mlops_dev_track": "stable",
    }
    return [
        # Discovery reports the pod IP with a container port; relabelling moves it to the annotation's.
        {"targets": ["127.0.0.1:9"], "labels": {**pod, "__meta_kubernetes_pod_name": "server-0"}},
        {
            "targets": ["127.0.0.1:9"],
            "labels": {
                **pod,
                "__meta_kubernetes_pod_name": "server-1",
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "false",
            },
        },
        {
            "targets": ["127.0.0.1:9"],
            "labels": {
                **pod,
                "__meta_kubernetes_pod_name": "server-2",
                "__meta_kubernetes_pod_phase": "Succeeded",
            },
        },
    ]


def _start(name: str, argv: list[str], log: Path, ready: str) -> ManagedProcess:
    process = ManagedProcess(name, argv, log)
    process.start()
    process.wait_http(ready, timeout_s=60)
    return process


def _wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def _firing(api: str, alertname: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def _decisions(trigger: TriggerProcess) -> dict[str, float]:
    """The trigger's `mlops_retrain_alerts_total` by decision, from its own /metrics."""
    text = httpx.get(trigger.url + "/metrics", timeout=5).text
    return {
        s.labels["decision"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mlops_retrain_alerts_total"
    }


def _configure(tmp_path: Path, server_port: int, am_port: int, trigger: TriggerProcess) -> None:
    """The stack's own rules and configurations, pointed at loopback. Differences from a cluster:
    Debian's Prometheus has no Kubernetes discovery (the same targets come from a file), the drift
    alert fires as soon as its condition holds, and Alertmanager re-sends every few seconds (the
    trigger must turn each repeat into nothing)."""
    thresholds = AlertThresholds(drift_for="0s", drift_min_window_rows=500)
    write_yaml(tmp_path / "mlops-rules.yaml", {"groups": rule_groups(thresholds, [NS])})
    config = prometheus_config([NS], "1s", f"127.0.0.1:{am_port}", [str(tmp_path / "mlops-rules.yaml")])
    config["global"]["evaluation_interval"] = "1s"
    job = config["scrape_configs"][0]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (tmp_path / "targets.json").write_text(json.dumps(_discovered_targets(server_port)))
    (tmp_path / "prometheus.yml").write_text(to_yaml(config))
    (tmp_path / "token").write_text(WEBHOOK_TOKEN)
    route = RetrainRoute(f"{trigger.url}/alertmanager", str(tmp_path / "token"), (DRIFT_ALERT,))
    am = alertmanager_config(route, group_wait="1s")
    am["route"]["group_interval"] = "1s"
    am["route"]["routes"][0]["repeat_interval"] = "2s"
    write_yaml(tmp_path / "alertmanager.yml", am)


def _start_pair(tools: Tools, tmp_path: Path, am_port: int, prom_port: int) -> list[ManagedProcess]:
    alertmanager = _start(
        "alertmanager",
        [
            str(tools.alertmanager),
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        f"http://127.0.0.1:{am_port}/-/ready",
    )
    prometheus = _start(
        "prometheus",
        [
            str(tools.prometheus),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path / "prometheus.log",
        f"http://127.0.0.1:{prom_port}/-/ready",
    )
    return [prometheus, alertmanager]


def _check_discovery(api: str, server_port: int) -> None:
    """The relabelling keeps the annotated, running pod only, with its namespace, pod and track."""
    targets = _wait(
        "a healthy scrape",
        lambda: [
            t for t in httpx.get(f"{api}/targets").json()["data"]["activeTargets"] if t["health"] == "up"
        ],
    )
    (target,) = targets
    assert target["labels"] == {
        "job": "mlops-serving",
        "namespace": NS,
        "pod": "server-0",
        "track": "stable",
        "instance": f"127.0.0.1:{server_port}",
    }
    assert target["scrapeUrl"] == f"http://127.0.0.1:{server_port}/metrics"
    assert len(httpx.get(f"{api}/targets").json()["data"]["droppedTargets"]) == 2


@pytest.mark.slow
@pytest.mark.integration
def test_drift_opens_one_retrain_dispatch_through_prometheus_alertmanager_and_the_trigger(
    live_server: LiveServer, tools: Tools, tmp_path: Path
) -> None:
    github = FakeGitHub()
    github.start()
    trigger = start_trigger(tmp_path, github.url)
    server_port, am_port, prom_port = int(live_server.url.rsplit(":", 1)[1]), free_port(), free_port()
    _configure(tmp_path, server_port, am_port, trigger)
    processes = _start_pair(tools, tmp_path, am_port, prom_port)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        _check_discovery(api, server_port)
        # Traffic like the reference: a full window, several evaluations, no drift alert.
        live_server.predict(live_server.rows.sample(frac=1.0, random_state=1))
        _wait("a scrape of the full window", lambda: _query(api, "mlops_server_drift_window_rows >= 500"))
        time.sleep(5)
        assert not _query(api, "mlops_server_drift_psi > 0.2"), _query(api, "mlops_server_drift_psi")
        assert not _firing(api, DRIFT_ALERT)
        assert github.accepted() == []

        # Shifted traffic (three features scaled up): the alert fires within a bounded time ...
        shifted = live_server.rows.sample(n=569, random_state=0).reset_index(drop=True)
        for column in shifted.columns[:3]:
            shifted[column] = shifted[column] * 3
        live_server.predict(shifted)
        firing = _wait("the drift alert", lambda: _firing(api, DRIFT_ALERT), timeout=60)
        assert {a["labels"]["feature"] for a in firing} <= set(shifted.columns[:3])
        for alert in firing:
            assert alert["labels"]["model_name"] == live_server.model_name
            assert alert["labels"]["release_id"] == live_server.release_id

        # ... Alertmanager delivers it to the real trigger, which makes exactly one GitHub call.
        (call,) = _wait("the repository_dispatch", github.accepted, timeout=60)
        assert call.path == f"/repos/{REPOSITORY}/dispatches", call.path
        payload = call.json()
        assert payload["event_type"] == "mlops-retrain"
        client = payload["client_payload"]
        assert client["model_name"] == live_server.model_name
        assert client["release_id"] == live_server.release_id
        assert set(client["features"]) <= set(shifted.columns[:3]) and client["features"]
        # Alertmanager repeats the firing alert every few seconds; every repeat dispatches nothing.
        _wait("a repeated notification", lambda: _decisions(trigger).get("duplicate", 0) >= 2, timeout=60)
        assert len(github.accepted()) == 1, [r.path for r in github.all()]

        # Every rule evaluates on the real series without an error (no many-to-many joins, ...).
        groups = httpx.get(f"{api}/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 6 and all(r["health"] == "ok" for r in rules), rules
    finally:
        for process in processes:
            process.stop()
        trigger.stop()
        github.stop()


def _query(api: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api}/query", params={"query": expr})
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["result"])
