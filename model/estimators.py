"""Estimators the training spec may name, and what loading each one safely requires.

The skops trusted-types list lives here, per estimator, because a model artifact must never
be the authority on which types are safe to instantiate when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model.errors import BadConfig

__all__ = [
    "ESTIMATORS",
    "EstimatorError",
    "EstimatorInfo",
    "Task",
    "build_pipeline",
    "estimator_info",
    "trusted_types",
]

Task = Literal["classification", "regression"]

_TREE = "sklearn.tree._tree.Tree"
_HGB_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


class EstimatorError(BadConfig):
    """The spec names an estimator or a parameter that does not exist for its task."""


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    task: Task
    cls: type[BaseEstimator]
    scale: bool
    """Standardise features first (linear models); trees do not need it."""
    trusted: tuple[str, ...]
    """Types beyond skops' defaults that loading this estimator needs."""


ESTIMATORS: dict[tuple[str, Task], EstimatorInfo] = {
    (info.name, info.task): info
    for info in (
        EstimatorInfo("logistic_regression", "classification", LogisticRegression, True, ()),
        EstimatorInfo("random_forest", "classification", RandomForestClassifier, False, (_TREE,)),
        EstimatorInfo(
            "hist_gradient_boosting",
            "classification",
            HistGradientBoostingClassifier,
            False,
            (_HGB_PREDICTOR,),
        ),
        EstimatorInfo("linear_regression", "regression", LinearRegression, True, ()),
        EstimatorInfo("ridge", "regression", Ridge, True, ()),
        EstimatorInfo("random_forest", "regression", RandomForestRegressor, False, (_TREE,)),
        EstimatorInfo(
            "hist_gradient_boosting",
            "regression",
            HistGradientBoostingRegressor,
            False,
            (_HGB_PREDICTOR,),
        ),
    )
}


def estimator_names(task: Task) -> list[str]:
    return sorted(name for name, t in ESTIMATORS if t == task)


def estimator_info(name: str, task: Task) -> EstimatorInfo:
    info = ESTIMATORS.get((name, task))
    if info is None:
        raise EstimatorError(
            f"unknown estimator {name!r} for task {task!r}; allowed: {', '.join(estimator_names(task))}"
        )
    return info


def trusted_types(name: str, task: Task) -> list[str]:
    return list(estimator_info(name, task).trusted)


def build_pipeline(name: str, task: Task, params: dict[str, Any], seed: int) -> Pipeline:
    """A fresh, unfitted pipeline; params are checked against the estimator before any fit."""
    info = estimator_info(name, task)
    estimator = info.cls()
    allowed = estimator.get_params(deep=False)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise EstimatorError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for estimator {name!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    values = dict(params)
    if "random_state" in allowed and "random_state" not in values:
        values["random_state"] = seed
    estimator.set_params(**values)
    _check_param_values(estimator, name)
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())] if info.scale else []
    steps.append(("model", estimator))
    return Pipeline(steps)


def _check_param_values(estimator: BaseEstimator, name: str) -> None:
    # scikit-learn checks values only inside fit(); its (private) validator lets a bad spec
    # fail before minutes of data loading and fitting rather than after.
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    try:
        validate()
    except (ValueError, TypeError) as exc:
        raise EstimatorError(f"bad parameter for estimator {name!r}: {exc}") from exc
