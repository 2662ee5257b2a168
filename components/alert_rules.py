"""The model servers' Prometheus alert rules, built from the stack's thresholds (no Pulumi here).

The same groups go into the bundled Prometheus' rule file and into the operator's PrometheusRule,
so promtool's unit tests (tests/monitoring) cover both modes. Every expression selects the
serving job in the stack's namespaces only (a shared Prometheus may scrape other stacks too),
and joins the served release's labels from `mlops_server_model_info` by (namespace, pod): the
request and drift series carry no release labels of their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model.retrain_trigger import DEFAULT_ALERT, NAMESPACE

__all__ = [
    "ALERT_NAMES",
    "DRIFT_ALERT",
    "DURATION",
    "PREDICTION_ROUTES",
    "RATE_WINDOW",
    "RELEASE_LABELS",
    "SERVING_JOB",
    "AlertThresholds",
    "prediction_rate",
    "rule_groups",
    "serving_selector",
    "with_release",
]

SERVING_JOB = "mlops-serving"
"""The `job` label of the model servers' targets, in both modes (the PodMonitor relabels to it)."""
RATE_WINDOW = "5m"
"""Window of the request rates the error-ratio, latency and traffic alerts judge."""
ERROR_RATIO_FOR = "5m"
LATENCY_FOR = "10m"
PREDICTION_ROUTES = r"/invocations|/v2/models/\\{name\\}(/versions/\\{version\\})?/infer|ModelInfer"
"""Route labels of prediction requests: HTTP (MLflow and V2) and gRPC ModelInfer (PromQL regex)."""
SERVER_ERRORS = "5..|INTERNAL|UNAVAILABLE|UNKNOWN|DATA_LOSS"
"""Status labels counted as server errors: HTTP 5xx and their gRPC codes."""
DRIFT_ALERT = DEFAULT_ALERT
"""The per-feature drift alert: the one the retrain trigger acts on by default."""
ALERT_NAMES = (
    "MLOpsHighErrorRatio",
    "MLOpsHighLatency",
    DRIFT_ALERT,
    "MLOpsPredictionDrift",
    "MLOpsModelNotReady",
    "MLOpsNoTraffic",
)
DURATION = r"^([0-9]+(y|w|d|h|m|s|ms))+$"
"""A Prometheus duration: what alert `for:`, scrape intervals and retention take."""
RELEASE_LABELS = "model_name, release_id"
"""The served release's labels, joined from `mlops_server_model_info`."""


@dataclass(frozen=True)
class AlertThresholds:
    """When each alert fires (`mlops:monitoring.thresholds`: the stack settings validate with this class)."""

    error_ratio: float = 0.05
    """Share of prediction requests answered with a server error, per release, over 5 minutes."""
    p99_latency_seconds: float = 0.5
    """p99 of prediction latency per release over 5 minutes."""
    drift_psi: float = 0.2
    """Per-feature PSI of a server's window against the release's reference profile."""
    drift_for: str = "10m"
    """How long drift must last before the alert fires (a Prometheus duration)."""
    drift_min_window_rows: int = 500
    """Windows with fewer rows are not judged: their PSI is noise."""
    not_ready_for: str = "5m"
    no_traffic_for: str = "30m"

    def __post_init__(self) -> None:
        if not 0 < self.error_ratio < 1:
            raise ValueError(f"error_ratio must be in (0, 1), got {self.error_ratio!r}")
        for key in ("p99_latency_seconds", "drift_psi"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.drift_min_window_rows < 1:
            raise ValueError(f"drift_min_window_rows must be >= 1, got {self.drift_min_window_rows!r}")
        for key in ("drift_for", "not_ready_for", "no_traffic_for"):
            if not re.match(DURATION, getattr(self, key)):
                raise ValueError(
                    f"{key} must be a Prometheus duration such as 10m, got {getattr(self, key)!r}"
                )


def serving_selector(namespaces: Sequence[str]) -> str:
    """The label matchers of the model servers' series in these namespaces."""
    if not namespaces:
        raise ValueError("namespaces must name at least one namespace to watch")
    bad = [n for n in namespaces if not re.match(NAMESPACE, n)]
    if bad:
        raise ValueError(f"namespaces {bad} are not Kubernetes namespace names")
    ns = f'namespace="{namespaces[0]}"' if len(namespaces) == 1 else f'namespace=~"{"|".join(namespaces)}"'
    return f'job="{SERVING_JOB}", {ns}'


def with_release(expr: str, sel: str) -> str:
    """`expr` with model_name and release_id joined from the pod's model_info (value unchanged)."""
    return f"({expr}) * on(namespace, pod) group_left({RELEASE_LABELS}) mlops_server_model_info{{{sel}}}"


def prediction_rate(metric: str, sel: str, extra: str = "", window: str = RATE_WINDOW) -> str:
    """The per-second rate of `metric` over prediction requests only; `extra` adds matchers."""
    return f'rate({metric}{{{sel}, route=~"{PREDICTION_ROUTES}"{extra}}}[{window}])'


def _rate_by_release(metric: str, sel: str, extra: str = "", by: str = "") -> str:
    series = prediction_rate(metric, sel, extra)
    return f"sum by (namespace, {RELEASE_LABELS}{by}) ({with_release(series, sel)})"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def _release_alerts(t: AlertThresholds, sel: str) -> list[dict[str, Any]]:
    requests = _rate_by_release("mlops_server_requests_total", sel)
    errors = _rate_by_release("mlops_server_requests_total", sel, f', status=~"{SERVER_ERRORS}"')
    buckets = _rate_by_release("mlops_server_request_duration_seconds_bucket", sel, by=", le")
    served = f"sum by (namespace, {RELEASE_LABELS}) (mlops_server_model_info{{{sel}}})"
    where = "{{ $labels.model_name }} release {{ $labels.release_id }} in {{ $labels.namespace }}"
    return [
        _alert(
            "MLOpsHighErrorRatio",
            f"({errors}) / ({requests}) > {t.error_ratio:g}",
            ERROR_RATIO_FOR,
            "critical",
            f"{where} answers {{{{ $value | humanizePercentage }}}} of predictions with server errors",
            f"More than {t.error_ratio * 100:g}% of prediction requests failed with a 5xx (or gRPC "
            f"server error) over {RATE_WINDOW}, for {ERROR_RATIO_FOR}. Check the server logs; roll "
            "back with `mlops rollback` if the release is at fault.",
        ),
        _alert(
            "MLOpsHighLatency",
            f"histogram_quantile(0.99, {buckets}) > {t.p99_latency_seconds:g}",
            LATENCY_FOR,
            "warning",
            f"{where}: p99 prediction latency is {{{{ $value | humanizeDuration }}}}",
            f"The 99th percentile of prediction latency exceeded {t.p99_latency_seconds:g}s over "
            f"{RATE_WINDOW}, for {LATENCY_FOR}. Look at CPU throttling, batch sizes and replicas.",
        ),
        _alert(
            "MLOpsNoTraffic",
            # From model_info, so a release that never got a request (no counter yet) counts.
            f"{served} unless on(namespace, {RELEASE_LABELS}) (({requests}) > 0)",
            t.no_traffic_for,
            "warning",
            f"{where} has served no predictions for {t.no_traffic_for}",
            f"No prediction request reached this release in any {RATE_WINDOW} window for "
            f"{t.no_traffic_for}. Check the clients, the Service and the NetworkPolicy.",
        ),
    ]


def _drift_alerts(t: AlertThresholds, sel: str) -> list[dict[str, Any]]:
    enough = f"on(namespace, pod) (mlops_server_drift_window_rows{{{sel}}} >= {t.drift_min_window_rows})"
    features = with_release(f"(mlops_server_drift_psi{{{sel}}} > {t.drift_psi:g}) and {enough}", sel)
    prediction = with_release(
        f"(mlops_server_prediction_drift_psi{{{sel}}} > {t.drift_psi:g}) and {enough}", sel
    )
    where = "{{ $labels.model_name }} release {{ $labels.release_id }} in {{ $labels.namespace }}"
    judged = (
        f"over windows of at least {t.drift_min_window_rows} rows, for {t.drift_for}, against the "
        "release's reference profile"
    )
    return [
        _alert(
            DRIFT_ALERT,
            # One alert per release and feature, whichever replica sees it.
            f"max by (namespace, {RELEASE_LABELS}, feature) ({features})",
            t.drift_for,
            "warning",
            f'{where}: feature {{{{ $labels.feature }}}} drifted (PSI {{{{ $value | printf "%.2f" }}}})',
            f"The feature's population stability index exceeded {t.drift_psi:g} {judged}. The data "
            "served differs from the training data: retrain on recent data (docs/retraining.md).",
        ),
        _alert(
            "MLOpsPredictionDrift",
            f"max by (namespace, {RELEASE_LABELS}) ({prediction})",
            t.drift_for,
            "warning",
            f'{where}: predictions drifted (PSI {{{{ $value | printf "%.2f" }}}})',
            f"The PSI of the predictions' distribution exceeded {t.drift_psi:g} {judged}.",
        ),
    ]


def _ready_alerts(t: AlertThresholds, sel: str) -> list[dict[str, Any]]:
    down = f"mlops_server_ready{{{sel}}} == 0"
    # Release labels where the server exports model_info; a server that never loaded its model
    # (or does not answer scrapes) still alerts, by pod.
    expr = (
        f"{with_release(down, sel)} or on(namespace, pod) ({down}) or on(namespace, pod) (up{{{sel}}} == 0)"
    )
    return [
        _alert(
            "MLOpsModelNotReady",
            expr,
            t.not_ready_for,
            "critical",
            "Model server {{ $labels.pod }} in {{ $labels.namespace }} is not ready",
            f"The server has not been ready (or not answered scrapes) for {t.not_ready_for}: it "
            "takes no predictions. Check its events and logs (model download, checksum, memory).",
        ),
    ]


def rule_groups(thresholds: AlertThresholds, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The rule groups (Prometheus rule-file `groups:` entries) for servers in `namespaces`."""
    sel = serving_selector(namespaces)
    return [
        {"name": "mlops-serving", "rules": _release_alerts(thresholds, sel) + _ready_alerts(thresholds, sel)},
        {"name": "mlops-drift", "rules": _drift_alerts(thresholds, sel)},
    ]
