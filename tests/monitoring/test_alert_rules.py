"""The alert rules, as built for a stack, checked and unit-tested by promtool.

Every alert gets input series that make it fire and series that must not (other releases, other
namespaces, windows too small, before its `for`), in files written here from the builder's
output. Debian's promtool (the test tool) and upstream promtool at the deployed version both run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.alert_rules import ALERT_NAMES, AlertThresholds, rule_groups
from tests.monitoring.conftest import Tools, run, write_yaml

NS = "mlops-test"
A, B, C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
THRESHOLDS = AlertThresholds()
GROUPS = rule_groups(THRESHOLDS, [NS])
RULES = {rule["alert"]: rule for group in GROUPS for rule in group["rules"]}


def series(metric: str, pod: str, values: str, namespace: str = NS, **extra: str) -> dict[str, str]:
    labels = {"job": "mlops-serving", "namespace": namespace, "pod": pod, "instance": f"{pod}:8080", **extra}
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def info(pod: str, release: str, namespace: str = NS) -> dict[str, str]:
    return series(
        "mlops_server_model_info",
        pod,
        "1+0x90",
        namespace,
        model_name="bc",
        release_id=release,
        model_version="1",
        runtime="sklearn",
    )


def requests(
    pod: str, values: str, status: str = "200", route: str = "/invocations", method: str = "POST"
) -> dict[str, str]:
    return series(
        "mlops_server_requests_total", pod, values, protocol="http", route=route, method=method, status=status
    )


def bucket(pod: str, le: str, values: str) -> dict[str, str]:
    return series(
        "mlops_server_request_duration_seconds_bucket",
        pod,
        values,
        protocol="http",
        route="/invocations",
        le=le,
    )


def release_alert(name: str, release: str, summary: str, **labels: str) -> dict[str, Any]:
    rule = RULES[name]
    return {
        "exp_labels": {
            "severity": rule["labels"]["severity"],
            "namespace": NS,
            "model_name": "bc",
            "release_id": release,
            **labels,
        },
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }


def pod_alert(name: str, pod: str, summary: str, **labels: str) -> dict[str, Any]:
    rule = RULES[name]
    return {
        "exp_labels": {
            "severity": rule["labels"]["severity"],
            "job": "mlops-serving",
            "namespace": NS,
            "pod": pod,
            "instance": f"{pod}:8080",
            **labels,
        },
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }


def where(release: str) -> str:
    return f"bc release {release} in {NS}"


def case(
    name: str, input_series: list[dict[str, str]], checks: list[tuple[str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    return {
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [
            {"alertname": name, "eval_time": t, "exp_alerts": alerts} for t, alerts in checks
        ],
    }


CASES = [
    case(
        "MLOpsHighErrorRatio",
        [
            info("pod-a", A),
            requests("pod-a", "0+90x60"),
            requests("pod-a", "0+10x60", status="500"),
            # 2% errors: under the threshold.
            info("pod-b", B),
            requests("pod-b", "0+98x60", route="/v2/models/{name}/infer"),
            requests("pod-b", "0+2x60", status="500", route="/v2/models/{name}/infer"),
            # Not prediction traffic: health checks answered 503 do not count.
            requests("pod-b", "0+50x60", status="503", route="/v2/health/ready", method="GET"),
            # Another namespace (another stack's servers): not this stack's alert.
            info("pod-x", C, namespace="other"),
            series(
                "mlops_server_requests_total",
                "pod-x",
                "0+10x60",
                "other",
                protocol="http",
                route="/invocations",
                method="POST",
                status="500",
            ),
        ],
        [
            ("4m", []),  # pending: fires after its `for`
            (
                "15m",
                [
                    release_alert(
                        "MLOpsHighErrorRatio", A, f"{where(A)} answers 10% of predictions with server errors"
                    )
                ],
            ),
        ],
    ),
    case(
        "MLOpsHighLatency",
        [
            info("pod-a", A),
            bucket("pod-a", "0.5", "0+0x60"),
            bucket("pod-a", "1", "0+10x60"),
            bucket("pod-a", "+Inf", "0+10x60"),
            # p99 0.495s: just under 0.5s.
            info("pod-b", B),
            bucket("pod-b", "0.5", "0+10x60"),
            bucket("pod-b", "1", "0+10x60"),
            bucket("pod-b", "+Inf", "0+10x60"),
        ],
        [
            ("8m", []),
            ("15m", [release_alert("MLOpsHighLatency", A, f"{where(A)}: p99 prediction latency is 995ms")]),
        ],
    ),
    case(
        "MLOpsModelDrift",
        [
            # Two replicas of release A: one alert per feature, with the larger PSI.
            info("pod-a", A),
            series("mlops_server_drift_psi", "pod-a", "0.35+0x60", feature="f1"),
            series("mlops_server_drift_psi", "pod-a", "0.05+0x60", feature="f2"),
            series("mlops_server_drift_window_rows", "pod-a", "1000+0x60"),
            info("pod-a2", A),
            series("mlops_server_drift_psi", "pod-a2", "0.4+0x60", feature="f1"),
            series("mlops_server_drift_psi", "pod-a2", "0.1+0x60", feature="f2"),
            series("mlops_server_drift_window_rows", "pod-a2", "800+0x60"),
            # Release B drifts on a window too small to judge.
            info("pod-b", B),
            series("mlops_server_drift_psi", "pod-b", "0.9+0x60", feature="f1"),
            series("mlops_server_drift_window_rows", "pod-b", "100+0x60"),
        ],
        [
            ("5m", []),
            (
                "15m",
                [
                    release_alert(
                        "MLOpsModelDrift", A, f"{where(A)}: feature f1 drifted (PSI 0.40)", feature="f1"
                    )
                ],
            ),
        ],
    ),
    case(
        "MLOpsPredictionDrift",
        [
            info("pod-a", A),
            series("mlops_server_prediction_drift_psi", "pod-a", "0.3+0x60"),
            series("mlops_server_drift_window_rows", "pod-a", "1000+0x60"),
            info("pod-b", B),
            series("mlops_server_prediction_drift_psi", "pod-b", "0.1+0x60"),
            series("mlops_server_drift_window_rows", "pod-b", "1000+0x60"),
        ],
        [
            ("5m", []),
            (
                "15m",
                [release_alert("MLOpsPredictionDrift", A, f"{where(A)}: predictions drifted (PSI 0.30)")],
            ),
        ],
    ),
    case(
        "MLOpsModelNotReady",
        [
            # Not ready with its release known, ready, not ready before loading a model, not answering.
            info("pod-a", A),
            series("mlops_server_ready", "pod-a", "0+0x60"),
            series("up", "pod-a", "1+0x60"),
            info("pod-b", B),
            series("mlops_server_ready", "pod-b", "1+0x60"),
            series("up", "pod-b", "1+0x60"),
            series("mlops_server_ready", "pod-c", "0+0x60"),
            series("up", "pod-c", "1+0x60"),
            series("up", "pod-d", "0+0x60"),
        ],
        [
            ("3m", []),
            (
                "10m",
                [
                    pod_alert(
                        "MLOpsModelNotReady",
                        "pod-a",
                        f"Model server pod-a in {NS} is not ready",
                        model_name="bc",
                        release_id=A,
                    ),
                    pod_alert("MLOpsModelNotReady", "pod-c", f"Model server pod-c in {NS} is not ready"),
                    pod_alert("MLOpsModelNotReady", "pod-d", f"Model server pod-d in {NS} is not ready"),
                ],
            ),
        ],
    ),
    case(
        "MLOpsNoTraffic",
        [
            info("pod-a", A),  # served requests once, then nothing
            requests("pod-a", "500+0x60"),
            info("pod-b", B),  # steady traffic
            requests("pod-b", "0+10x60"),
            info("pod-c", C),  # never a request: no counter series at all
        ],
        [
            ("20m", []),
            (
                "40m",
                [
                    release_alert("MLOpsNoTraffic", A, f"{where(A)} has served no predictions for 30m"),
                    release_alert("MLOpsNoTraffic", C, f"{where(C)} has served no predictions for 30m"),
                ],
            ),
        ],
    ),
]


def _write(tmp_path: Path) -> Path:
    write_yaml(tmp_path / "rules.yaml", {"groups": GROUPS})
    return write_yaml(
        tmp_path / "tests.yaml",
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": CASES},
    )


def test_every_alert_has_a_unit_test_and_the_labels_a_receiver_needs() -> None:
    assert sorted(c["name"] for c in CASES) == sorted(ALERT_NAMES)
    assert set(RULES) == set(ALERT_NAMES)
    for name, rule in RULES.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert f'namespace="{NS}"' in rule["expr"], name  # only this stack's servers


@pytest.mark.parametrize("tool", ["promtool", "upstream_promtool"])
def test_rules_pass_promtool_check(tools: Tools, tmp_path: Path, tool: str) -> None:
    path = write_yaml(tmp_path / "rules.yaml", {"groups": GROUPS})
    result = run(getattr(tools, tool), "check", "rules", path)
    assert result.returncode == 0, result.output
    assert f"SUCCESS: {len(RULES)} rules found" in result.output


@pytest.mark.parametrize("tool", ["promtool", "upstream_promtool"])
def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say(
    tools: Tools, tmp_path: Path, tool: str
) -> None:
    tests = _write(tmp_path)
    result = run(getattr(tools, tool), "test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "SUCCESS" in result.output


def test_the_unit_tests_can_fail(tools: Tools, tmp_path: Path) -> None:
    """A threshold the series do not cross: promtool reports the missing alert (the tests bite)."""
    strict = rule_groups(AlertThresholds(error_ratio=0.2, drift_psi=0.5), [NS])
    write_yaml(tmp_path / "rules.yaml", {"groups": strict})
    write_yaml(tmp_path / "tests.yaml", {"rule_files": ["rules.yaml"], "tests": CASES})
    result = run(tools.promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: MLOpsHighErrorRatio" in result.output and "alertname: MLOpsModelDrift" in result.output


def test_thresholds_reach_the_expressions() -> None:
    custom = AlertThresholds(
        error_ratio=0.01,
        p99_latency_seconds=1.5,
        drift_psi=0.3,
        drift_for="20m",
        drift_min_window_rows=2000,
        not_ready_for="2m",
        no_traffic_for="1h",
    )
    rules = {r["alert"]: r for g in rule_groups(custom, [NS, "mlops-canary"]) for r in g["rules"]}
    assert rules["MLOpsHighErrorRatio"]["expr"].endswith("> 0.01")
    assert rules["MLOpsHighLatency"]["expr"].endswith("> 1.5")
    assert "mlops_server_drift_psi{" in rules["MLOpsModelDrift"]["expr"]
    assert "> 0.3)" in rules["MLOpsModelDrift"]["expr"] and ">= 2000" in rules["MLOpsModelDrift"]["expr"]
    assert rules["MLOpsModelDrift"]["for"] == "20m"
    assert rules["MLOpsModelNotReady"]["for"] == "2m" and rules["MLOpsNoTraffic"]["for"] == "1h"
    assert f'namespace=~"{NS}|mlops-canary"' in rules["MLOpsNoTraffic"]["expr"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_ratio": 1.5}, "error_ratio must be in (0, 1), got 1.5"),
        ({"drift_psi": 0}, "drift_psi must be > 0, got 0"),
        (
            {"drift_for": "ten minutes"},
            "drift_for must be a Prometheus duration such as 10m, got 'ten minutes'",
        ),
        ({"drift_min_window_rows": 0}, "drift_min_window_rows must be >= 1, got 0"),
    ],
)
def test_bad_thresholds_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        AlertThresholds(**kwargs)
    assert str(info.value) == message


def test_namespaces_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one namespace"):
        rule_groups(THRESHOLDS, [])
    with pytest.raises(ValueError, match=r"\['Bad_NS'\] are not Kubernetes namespace names"):
        rule_groups(THRESHOLDS, ["Bad_NS"])
