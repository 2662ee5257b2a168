"""The Grafana dashboard: the panels a user looks for, each query valid PromQL, stable JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.alert_rules import AlertThresholds
from components.dashboard import DASHBOARD_UID, RATE, build_dashboard, dashboard_expressions, dashboard_json
from tests.monitoring.conftest import Tools, run, write_yaml

NAMESPACES = ["mlops-dev"]
THRESHOLDS = AlertThresholds(p99_latency_seconds=0.75, drift_psi=0.25, drift_min_window_rows=800)
DASHBOARD = build_dashboard(NAMESPACES, THRESHOLDS, "MLOps model serving (dev)")


def _panels() -> dict[str, dict[str, object]]:
    return {str(p["title"]): p for p in DASHBOARD["panels"] if p["type"] != "row"}


def promql(expr: str) -> str:
    """A dashboard query as Prometheus runs it: Grafana replaces $__rate_interval first."""
    return expr.replace(RATE, "5m")


def test_the_panels_a_user_looks_for() -> None:
    panels = _panels()
    assert {
        "Requests per second",
        "Prediction latency",
        "Error ratio",
        "Drift: PSI per feature",
        "Drift: KS per feature",
        "Drift window rows",
        "Prediction shares",
        "Served releases",
    } <= set(panels)
    latency = [t["legendFormat"] for t in panels["Prediction latency"]["targets"]]  # type: ignore[attr-defined]
    assert latency == ["p50", "p90", "p99"]
    served = panels["Served releases"]["targets"][0]  # type: ignore[index]
    assert "mlops_server_model_info" in served["expr"] and served["format"] == "table"
    assert DASHBOARD["uid"] == DASHBOARD_UID and DASHBOARD["title"] == "MLOps model serving (dev)"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alert_thresholds_are_drawn() -> None:
    panels = _panels()

    def red_line(title: str) -> float:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]  # type: ignore[index]
        return float(steps[-1]["value"])

    assert red_line("Prediction latency") == 0.75
    assert red_line("Drift: PSI per feature") == 0.25
    assert red_line("Drift window rows") == 800
    assert red_line("Error ratio") == THRESHOLDS.error_ratio


def test_every_query_uses_the_provisioned_datasource_and_only_the_stacks_servers() -> None:
    targets = [t for p in _panels().values() for t in p["targets"]]  # type: ignore[attr-defined]
    assert len(targets) == len(dashboard_expressions(DASHBOARD)) >= 12
    for target in targets:
        assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert 'job="mlops-serving", namespace="mlops-dev"' in target["expr"], target["expr"]


@pytest.mark.parametrize("tool", ["promtool", "upstream_promtool"])
def test_every_dashboard_query_is_valid_promql(tools: Tools, tmp_path: Path, tool: str) -> None:
    """Each query becomes a recording rule; promtool parses (and type-checks) every one."""
    expressions = dashboard_expressions(DASHBOARD)
    rules = [{"record": f"dashboard:query_{i}", "expr": promql(e)} for i, e in enumerate(expressions)]
    path = write_yaml(tmp_path / "dashboard-rules.yaml", {"groups": [{"name": "dashboard", "rules": rules}]})
    result = run(getattr(tools, tool), "check", "rules", path)
    assert result.returncode == 0, result.output
    assert f"SUCCESS: {len(rules)} rules found" in result.output


def test_a_broken_query_would_be_caught(tools: Tools, tmp_path: Path) -> None:
    rules = [{"record": "dashboard:broken", "expr": "sum by (le (rate(x[5m]))"}]
    path = write_yaml(tmp_path / "broken.yaml", {"groups": [{"name": "dashboard", "rules": rules}]})
    assert run(tools.promtool, "check", "rules", path).returncode != 0


def test_the_json_is_stable() -> None:
    again = build_dashboard(NAMESPACES, THRESHOLDS, "MLOps model serving (dev)")
    text = dashboard_json(DASHBOARD)
    assert text == dashboard_json(again)
    assert DASHBOARD["refresh"] == "30s" and DASHBOARD["editable"] is False
