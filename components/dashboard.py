"""The model-serving Grafana dashboard, as code (grafana-foundation-sdk), for one stack's servers.

`build_dashboard` returns the dashboard JSON Grafana's file provisioning reads; MonitoringStack
puts it into a ConfigMap. Panels query the provisioned Prometheus datasource (uid
`DATASOURCE_UID`) with the same selectors and release join as the alert rules, and mark the
alert thresholds, so what an alert judges is what the dashboard shows. tests/monitoring parses
every expression with promtool and checks every metric name against the real server's /metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from components.alert_rules import (
    RELEASE_LABELS,
    SERVER_ERRORS,
    AlertThresholds,
    prediction_rate,
    serving_selector,
    with_release,
)
from components.monitoring_config import DATASOURCE_UID

__all__ = ["DASHBOARD_UID", "build_dashboard", "dashboard_expressions", "dashboard_json"]

DASHBOARD_UID = "mlops-model-serving"
RATE = "$__rate_interval"
"""Grafana's rate window (at least four scrape intervals); promtool-checked as 5m."""
_DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(_DATASOURCE)


def _threshold_line(value: float) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color="green"), Threshold(value=value, color="red")])
    )


def _series(title: str, unit: str, description: str) -> Timeseries:
    return (
        Timeseries()
        .title(title)
        .unit(unit)
        .description(description)
        .datasource(_DATASOURCE)
        .height(8)
        .span(12)
    )


def _traffic_panels(sel: str, t: AlertThresholds) -> list[Timeseries]:
    requests = prediction_rate("mlops_server_requests_total", sel, window=RATE)
    errors = prediction_rate("mlops_server_requests_total", sel, f', status=~"{SERVER_ERRORS}"', RATE)
    by_release = f"sum by ({RELEASE_LABELS}) "
    buckets = (
        f"sum by (le) ({prediction_rate('mlops_server_request_duration_seconds_bucket', sel, window=RATE)})"
    )
    return [
        _series(
            "Requests per second", "reqps", "Prediction requests per release and status code."
        ).with_target(
            _query(
                f"sum by ({RELEASE_LABELS}, status) ({with_release(requests, sel)})",
                "{{release_id}} {{status}}",
            )
        ),
        _series("Prediction latency", "s", "p50, p90 and p99 of prediction requests; red: the p99 alert.")
        .with_target(_query(f"histogram_quantile(0.5, {buckets})", "p50", "A"))
        .with_target(_query(f"histogram_quantile(0.9, {buckets})", "p90", "B"))
        .with_target(_query(f"histogram_quantile(0.99, {buckets})", "p99", "C"))
        .thresholds(_threshold_line(t.p99_latency_seconds))
        .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)),
        _series(
            "Error ratio", "percentunit", "Share of predictions answered with a server error; red: the alert."
        )
        .with_target(
            _query(
                f"({by_release}({with_release(errors, sel)}))"
                f" / ({by_release}({with_release(requests, sel)}))",
                "{{release_id}}",
            )
        )
        .thresholds(_threshold_line(t.error_ratio))
        .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)),
        _series("Servers ready", "short", "Ready model servers per release, and requests in flight.")
        .with_target(
            _query(
                f"sum by ({RELEASE_LABELS}) ({with_release(f'mlops_server_ready{{{sel}}}', sel)})",
                "ready {{release_id}}",
                "A",
            )
        )
        .with_target(_query(f"sum(mlops_server_in_flight_requests{{{sel}}})", "in flight", "B")),
    ]


def _drift_panels(sel: str, t: AlertThresholds) -> list[Timeseries]:
    return [
        _series(
            "Drift: PSI per feature",
            "none",
            "Population stability index of each feature's window; red: the alert.",
        )
        .with_target(_query(f"max by (feature) (mlops_server_drift_psi{{{sel}}})", "{{feature}}"))
        .thresholds(_threshold_line(t.drift_psi))
        .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)),
        _series(
            "Drift: KS per feature", "none", "Kolmogorov-Smirnov statistic of each feature's window."
        ).with_target(_query(f"max by (feature) (mlops_server_drift_ks{{{sel}}})", "{{feature}}")),
        _series(
            "Drift window rows",
            "short",
            f"Rows in each server's window; drift is judged from {t.drift_min_window_rows}.",
        )
        .with_target(_query(f"mlops_server_drift_window_rows{{{sel}}}", "{{pod}}"))
        .thresholds(_threshold_line(t.drift_min_window_rows)),
        _series(
            "Prediction shares",
            "percentunit",
            "Share of the window's predictions per class or bin, and their PSI.",
        )
        .with_target(_query(f"avg by (bin) (mlops_server_prediction_share{{{sel}}})", "{{bin}}", "A"))
        .with_target(_query(f"max(mlops_server_prediction_drift_psi{{{sel}}})", "prediction PSI", "B")),
    ]


def _release_panels(sel: str) -> list[Stat | Table]:
    served = f"count by (model_name, release_id, model_version, runtime) (mlops_server_model_info{{{sel}}})"
    organize = DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True},
            "renameByName": {"Value": "servers"},
            "indexByName": {"model_name": 0, "release_id": 1, "model_version": 2, "runtime": 3, "Value": 4},
        },
    )
    return [
        Table()
        .title("Served releases")
        .description("Release id and model version each server reports (mlops_server_model_info).")
        .datasource(_DATASOURCE)
        .with_target(_query(served, "", "A").format(PromQueryFormat.TABLE).instant())
        .with_transformation(organize)
        .height(6)
        .span(16),
        Stat()
        .title("Ready servers")
        .datasource(_DATASOURCE)
        .with_target(_query(f"sum(mlops_server_ready{{{sel}}})", "ready", "A").instant())
        .height(6)
        .span(8),
    ]


def build_dashboard(namespaces: Sequence[str], thresholds: AlertThresholds, title: str) -> dict[str, Any]:
    """The dashboard (Grafana's JSON model) for the model servers in `namespaces`."""
    sel = serving_selector(namespaces)
    board = (
        Dashboard(title)
        .uid(DASHBOARD_UID)
        .tags(["mlops", "model-serving"])
        .description("Traffic, latency, errors and drift of the model servers; one stack.")
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
        .with_row(Row("Release"))
    )
    for panel in _release_panels(sel):
        board = board.with_panel(panel)
    board = board.with_row(Row("Traffic"))
    for series in _traffic_panels(sel, thresholds):
        board = board.with_panel(series)
    board = board.with_row(Row("Drift"))
    for series in _drift_panels(sel, thresholds):
        board = board.with_panel(series)
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # Unique panel ids: Grafana keys panel links, state and edits by them (the SDK leaves 0).
    for number, panel in enumerate(built["panels"], start=1):
        panel["id"] = number
    return built


def dashboard_json(dashboard: dict[str, Any]) -> str:
    """The dashboard file's text: sorted keys, so a render is stable and diffs stay small."""
    return json.dumps(dashboard, sort_keys=True, indent=2)


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels (rows hold none when expanded)."""
    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
