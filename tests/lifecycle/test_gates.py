"""Gate decisions: absolute thresholds and the champion comparison."""

from __future__ import annotations

from model.evaluate import evaluate_gates
from model.spec import GateSpec, Threshold

GATES = GateSpec(
    thresholds={"accuracy": Threshold(min=0.9), "log_loss": Threshold(max=0.3)},
    max_regression={"accuracy": 0.01, "log_loss": 0.05},
)


def test_all_pass_without_champion() -> None:
    report = evaluate_gates(GATES, {"accuracy": 0.95, "log_loss": 0.2, "f1": 0.9, "roc_auc": 0.99})
    assert report.passed and report.champion_version is None
    assert [r.kind for r in report.results] == ["min", "max"]


def test_threshold_failure_names_metric_value_and_threshold() -> None:
    report = evaluate_gates(GATES, {"accuracy": 0.85, "log_loss": 0.2})
    assert not report.passed
    (failure,) = report.failures
    assert failure.message == "accuracy = 0.85 must be >= min 0.9: FAILED"


def test_champion_regression_beyond_allowance_fails() -> None:
    metrics = {"accuracy": 0.93, "log_loss": 0.2}
    report = evaluate_gates(
        GATES, metrics, champion={"accuracy": 0.95, "log_loss": 0.1}, champion_version="4"
    )
    assert report.champion_version == "4"
    failed = {(r.metric, r.kind) for r in report.failures}
    assert failed == {("accuracy", "champion"), ("log_loss", "champion")}
    message = next(r.message for r in report.failures if r.metric == "accuracy")
    assert "accuracy = 0.93 must be >= 0.94" in message


def test_small_regression_within_allowance_passes() -> None:
    report = evaluate_gates(
        GATES, {"accuracy": 0.945, "log_loss": 0.12}, champion={"accuracy": 0.95, "log_loss": 0.1}
    )
    assert report.passed


def test_nan_metric_never_passes() -> None:
    report = evaluate_gates(GATES, {"accuracy": float("nan"), "log_loss": 0.1})
    assert not report.passed
