"""The small training spec tests release: logistic regression on breast cancer, in about a second."""

from __future__ import annotations

import uuid
from typing import Any

from model.spec import TrainingSpec


def quick_spec(prefix: str, **overrides: Any) -> TrainingSpec:
    """A spec that trains in about a second, under a fresh model name `<prefix>-<hex>`."""
    base: dict[str, Any] = {
        "model_name": f"{prefix}-{uuid.uuid4().hex[:8]}",
        "dataset": "sklearn:breast_cancer",
        "target": "target",
        "task": "classification",
        "estimator": "logistic_regression",
        "params": {"max_iter": 500},
        "gates": {"thresholds": {"accuracy": {"min": 0.85}}},
    }
    return TrainingSpec.model_validate({**base, **overrides})
