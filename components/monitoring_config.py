"""Configuration files of the bundled monitoring: Prometheus, Alertmanager, Grafana provisioning.

Pure functions from settings to plain data (no Pulumi): MonitoringStack writes their YAML into
ConfigMaps, and tests/monitoring checks the very same output with promtool and amtool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from components.alert_rules import DRIFT_ALERT, SERVING_JOB, serving_selector
from model.retrain_trigger import ALERT_NAME

__all__ = [
    "DATASOURCE_UID",
    "DEFAULT_RECEIVER",
    "GROUP_BY",
    "RETRAIN_RECEIVER",
    "SERVING_POD_SELECTOR",
    "RetrainRoute",
    "alertmanager_config",
    "grafana_dashboard_provider",
    "grafana_datasources",
    "prometheus_config",
    "to_yaml",
]

SERVING_POD_SELECTOR = {"app.kubernetes.io/component": "serving", "app.kubernetes.io/part-of": "mlops"}
"""Labels of every model server pod (components/common.py labels); what Prometheus discovers."""
DATASOURCE_UID = "prometheus"
"""Grafana's provisioned Prometheus datasource; the dashboard's panels refer to it by this uid."""
DEFAULT_RECEIVER = "default"
RETRAIN_RECEIVER = "retrain"
GROUP_BY = ("alertname", "namespace", "model_name", "release_id")
"""Alerts of one release are notified together."""


def to_yaml(data: Any) -> str:
    """Deterministic YAML (keys in the order built), as the ConfigMaps hold it."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)


def prometheus_config(
    namespaces: Sequence[str],
    scrape_interval: str,
    alertmanager: str,
    rule_files: Sequence[str],
) -> dict[str, Any]:
    """Scrape the model servers in `namespaces` by their prometheus.io annotations; alert to Alertmanager.

    `alertmanager` is host:port. Only pods labelled as model servers, with
    `prometheus.io/scrape: "true"`, running, are scraped; their namespace and pod names and the
    serving track become target labels (the alert rules join on namespace and pod).
    """
    serving_selector(namespaces)  # validates the names
    selector = ",".join(f"{k}={v}" for k, v in SERVING_POD_SELECTOR.items())
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": list(rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": SERVING_JOB,
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "namespaces": {"names": list(namespaces)},
                        "selectors": [{"role": "pod", "label": selector}],
                    }
                ],
                "relabel_configs": _pod_relabelling(),
            }
        ],
    }


def _pod_relabelling() -> list[dict[str, Any]]:
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    return [
        {"source_labels": [annotation + "scrape"], "regex": "true", "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"},
        {"source_labels": [annotation + "path"], "regex": "(.+)", "target_label": "__metrics_path__"},
        # One target per pod (targets of each declared port collapse once the address is the same).
        {
            "source_labels": ["__address__", annotation + "port"],
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_label_mlops_dev_track"], "target_label": "track"},
    ]


@dataclass(frozen=True)
class RetrainRoute:
    """Where Alertmanager posts the alerts that start a retrain (the retrain trigger's webhook)."""

    url: str
    """The trigger's in-cluster URL, e.g. http://retrain-trigger.monitoring.svc.cluster.local:8080/alertmanager."""
    credentials_file: str
    """Path of the bearer token inside the Alertmanager container (mounted from a Secret)."""
    alert_names: tuple[str, ...] = (DRIFT_ALERT,)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"RetrainRoute.url must be an http(s) URL, got {self.url!r}")
        if not self.credentials_file.startswith("/"):
            raise ValueError(
                f"RetrainRoute.credentials_file must be an absolute path, got {self.credentials_file!r}"
            )
        bad = [n for n in self.alert_names if not re.match(ALERT_NAME, n)]
        if not self.alert_names or bad:
            raise ValueError(f"RetrainRoute.alert_names must be alert names, got {list(self.alert_names)}")


def alertmanager_config(retrain: RetrainRoute | None, group_wait: str = "30s") -> dict[str, Any]:
    """Group alerts per release; the retrain alerts also go to the trigger's webhook.

    The default receiver has no integration: alerts are listed in Alertmanager's UI and API;
    add Slack, e-mail or PagerDuty receivers to it where a team wants to be paged.
    """
    route: dict[str, Any] = {
        "receiver": DEFAULT_RECEIVER,
        "group_by": list(GROUP_BY),
        "group_wait": group_wait,
        "group_interval": "5m",
        "repeat_interval": "4h",
    }
    receivers: list[dict[str, Any]] = [{"name": DEFAULT_RECEIVER}]
    if retrain is not None:
        route["routes"] = [
            {
                "receiver": RETRAIN_RECEIVER,
                "matchers": [f'alertname=~"{"|".join(retrain.alert_names)}"'],
                # The trigger dedupes each alert episode; a repeat only refreshes it.
                "repeat_interval": "1h",
                # ... and on to the default receiver, like every other alert.
                "continue": True,
            },
            {"receiver": DEFAULT_RECEIVER},
        ]
        receivers.append(
            {
                "name": RETRAIN_RECEIVER,
                "webhook_configs": [
                    {
                        "url": retrain.url,
                        "send_resolved": False,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": retrain.credentials_file}
                        },
                    }
                ],
            }
        )
    return {"global": {"resolve_timeout": "5m"}, "route": route, "receivers": receivers}


def grafana_datasources(prometheus_url: str) -> dict[str, Any]:
    """Grafana's datasource provisioning file: the bundled Prometheus, read-only in the UI."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
            }
        ],
    }


def grafana_dashboard_provider(path: str) -> dict[str, Any]:
    """Grafana's dashboard provisioning file: the JSON dashboards under `path`, not editable in the UI."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "mlops",
                "folder": "MLOps",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": path},
            }
        ],
    }
