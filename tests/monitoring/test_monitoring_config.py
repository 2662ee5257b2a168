"""The bundled Prometheus and Alertmanager configurations, checked by promtool and amtool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alert_rules import AlertThresholds, rule_groups
from components.monitoring_config import (
    RetrainRoute,
    alertmanager_config,
    grafana_dashboard_provider,
    grafana_datasources,
    prometheus_config,
    to_yaml,
)
from infra.config import RetrainSettings
from tests.monitoring.conftest import Tools, run, write_yaml

NAMESPACES = ["mlops-dev"]
WEBHOOK = "http://retrain-trigger.monitoring.svc.cluster.local:8080/alertmanager"


def _prometheus_files(tmp_path: Path) -> Path:
    rules = write_yaml(tmp_path / "mlops-rules.yaml", {"groups": rule_groups(AlertThresholds(), NAMESPACES)})
    config = prometheus_config(NAMESPACES, "15s", "alertmanager.monitoring.svc:9093", [str(rules)])
    path = tmp_path / "prometheus.yml"
    path.write_text(to_yaml(config))
    return path


def test_prometheus_config_passes_promtool_with_its_rule_files(tools: Tools, tmp_path: Path) -> None:
    path = _prometheus_files(tmp_path)
    result = run(tools.upstream_promtool, "check", "config", path)
    assert result.returncode == 0, result.output
    assert "SUCCESS: 6 rules found" in result.output  # the rule file was loaded and checked too


def test_promtool_check_config_fails_on_a_broken_config(tools: Tools, tmp_path: Path) -> None:
    path = _prometheus_files(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["scrape_configs"][0]["relabel_configs"][0]["action"] = "keeps"
    path.write_text(to_yaml(config))
    result = run(tools.upstream_promtool, "check", "config", path)
    assert result.returncode != 0 and "keeps" in result.output


def test_prometheus_discovers_only_model_servers_of_the_stack() -> None:
    config = prometheus_config(["mlops-dev", "mlops-canary"], "30s", "am:9093", ["/etc/prometheus/r.yaml"])
    assert config["global"] == {"scrape_interval": "30s", "evaluation_interval": "30s"}
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mlops-serving"
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"] == {"names": ["mlops-dev", "mlops-canary"]}
    assert sd["selectors"] == [
        {"role": "pod", "label": "app.kubernetes.io/component=serving,app.kubernetes.io/part-of=mlops"}
    ]
    relabel = {tuple(r.get("source_labels", [])): r for r in job["relabel_configs"]}
    scrape = relabel[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert scrape == {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "regex": "true",
        "action": "keep",
    }
    assert relabel[("__meta_kubernetes_namespace",)]["target_label"] == "namespace"
    assert relabel[("__meta_kubernetes_pod_name",)]["target_label"] == "pod"
    assert config["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": ["am:9093"]}]}]}
    assert config["rule_files"] == ["/etc/prometheus/r.yaml"]


def _routes(tools: Tools, path: Path, **labels: str) -> str:
    result = run(
        tools.amtool,
        "config",
        "routes",
        "test",
        f"--config.file={path}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.output
    # The receivers come first; amtool adds a warning that --config.file wins over the URL.
    return result.output.splitlines()[0].strip()


def test_alertmanager_config_passes_amtool_and_routes_by_alertname(tools: Tools, tmp_path: Path) -> None:
    token = tmp_path / "webhook-token"
    token.write_text("t0ken")
    path = write_yaml(tmp_path / "alertmanager.yml", alertmanager_config(RetrainRoute(WEBHOOK, str(token))))
    result = run(tools.amtool, "check-config", path)
    assert result.returncode == 0, result.output
    assert "2 receivers" in result.output
    assert _routes(tools, path, alertname="MLOpsModelDrift", model_name="bc") == "retrain,default"
    assert _routes(tools, path, alertname="MLOpsHighLatency", model_name="bc") == "default"
    assert _routes(tools, path, alertname="MLOpsModelDriftExtra") == "default"  # an anchored match


def test_alertmanager_webhook_sends_the_bearer_token_from_a_file() -> None:
    config = alertmanager_config(RetrainRoute(WEBHOOK, "/etc/alertmanager/secrets/token", ("A", "B")))
    receivers = {r["name"]: r for r in config["receivers"]}
    (hook,) = receivers["retrain"]["webhook_configs"]
    assert hook["url"] == WEBHOOK and hook["send_resolved"] is False
    assert hook["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": "/etc/alertmanager/secrets/token"}
    }
    assert config["route"]["routes"][0]["matchers"] == ['alertname=~"A|B"']


def test_alertmanager_without_retraining_has_only_the_default_receiver(tools: Tools, tmp_path: Path) -> None:
    config = alertmanager_config(None)
    assert config["receivers"] == [{"name": "default"}] and "routes" not in config["route"]
    path = write_yaml(tmp_path / "alertmanager.yml", config)
    assert run(tools.amtool, "check-config", path).returncode == 0
    assert _routes(tools, path, alertname="MLOpsModelDrift") == "default"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "retrain:8080"}, "RetrainRoute.url must be an http(s) URL, got 'retrain:8080'"),
        (
            {"credentials_file": "token"},
            "RetrainRoute.credentials_file must be an absolute path, got 'token'",
        ),
        ({"alert_names": ("bad name",)}, "RetrainRoute.alert_names must be alert names, got ['bad name']"),
        ({"alert_names": ()}, "RetrainRoute.alert_names must be alert names, got []"),
    ],
)
def test_bad_retrain_routes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    values = {"url": WEBHOOK, "credentials_file": "/t", **kwargs}
    with pytest.raises(ValueError) as info:
        RetrainRoute(**values)
    assert str(info.value) == message


def test_retrain_routes_take_the_alert_names_the_stack_and_the_trigger_take() -> None:
    # One rule (model.retrain_trigger.ALERT_NAME) for the settings, the route and the trigger.
    assert RetrainRoute(WEBHOOK, "/t", ("mlops:ModelDrift",)).alert_names == ("mlops:ModelDrift",)
    assert RetrainSettings.model_validate({"alert_names": ["mlops:ModelDrift"]}).alert_names == (
        "mlops:ModelDrift",
    )


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    (source,) = grafana_datasources("http://prometheus.monitoring.svc.cluster.local:9090")["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus.monitoring.svc.cluster.local:9090"
    (provider,) = grafana_dashboard_provider("/var/lib/grafana-dashboards")["providers"]
    assert provider["options"] == {"path": "/var/lib/grafana-dashboards"}
    assert provider["allowUiUpdates"] is False
