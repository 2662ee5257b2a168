"""Metrics per task and the quality gates a release must pass before it is registered."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

from model.estimators import Task
from model.spec import HIGHER_IS_BETTER, GateSpec

__all__ = ["GateReport", "GateResult", "compute_metrics", "evaluate_gates"]


def compute_metrics(task: Task, model: Any, X: Any, y: Any) -> dict[str, float]:
    if task == "classification":
        labels = model.predict(X)
        proba = model.predict_proba(X)
        classes = model.classes_
        binary = len(classes) == 2
        return {
            "accuracy": float(skm.accuracy_score(y, labels)),
            "f1": float(skm.f1_score(y, labels, average="binary" if binary else "macro")),
            "roc_auc": float(
                skm.roc_auc_score(y, proba[:, 1])
                if binary
                else skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            ),
            "log_loss": float(skm.log_loss(y, proba, labels=classes)),
        }
    predicted = model.predict(X)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": float(skm.r2_score(y, predicted)),
    }


@dataclass(frozen=True)
class GateResult:
    metric: str
    kind: Literal["min", "max", "champion"]
    value: float
    threshold: float
    passed: bool

    @property
    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        if self.kind == "champion":
            relation = ">=" if self.metric in HIGHER_IS_BETTER else "<="
            return (
                f"{self.metric} = {self.value:.6g} must be {relation} {self.threshold:.6g} "
                f"(champion minus allowed regression): {verdict}"
            )
        relation = ">=" if self.kind == "min" else "<="
        return (
            f"{self.metric} = {self.value:.6g} must be {relation} {self.kind} {self.threshold:.6g}: {verdict}"
        )


@dataclass(frozen=True)
class GateReport:
    results: tuple[GateResult, ...]
    champion_version: str | None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def champion(self) -> str:
        """`none` (no champion yet: regression gates skipped) or `version <n>`."""
        return "none" if self.champion_version is None else f"version {self.champion_version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "champion": self.champion,
            "champion_version": self.champion_version,
            "results": [
                {
                    "metric": r.metric,
                    "kind": r.kind,
                    "value": r.value,
                    "threshold": r.threshold,
                    "passed": r.passed,
                    "message": r.message,
                }
                for r in self.results
            ],
        }


def evaluate_gates(
    gates: GateSpec,
    metrics: dict[str, float],
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> GateReport:
    """Absolute thresholds, then the allowed regression against the champion when there is one."""
    results: list[GateResult] = []
    for metric, bound in sorted(gates.thresholds.items()):
        value = metrics[metric]
        if bound.min is not None:
            results.append(GateResult(metric, "min", value, bound.min, _ok(value >= bound.min, value)))
        if bound.max is not None:
            results.append(GateResult(metric, "max", value, bound.max, _ok(value <= bound.max, value)))
    if champion is not None:
        for metric, delta in sorted(gates.max_regression.items()):
            if metric not in champion:
                continue
            value = metrics[metric]
            if metric in HIGHER_IS_BETTER:
                limit = champion[metric] - delta
                passed = value >= limit
            else:
                limit = champion[metric] + delta
                passed = value <= limit
            results.append(GateResult(metric, "champion", value, limit, _ok(passed, value)))
    return GateReport(tuple(results), champion_version if champion is not None else None)


def _ok(passed: bool, value: float) -> bool:
    return passed and not math.isnan(value)
