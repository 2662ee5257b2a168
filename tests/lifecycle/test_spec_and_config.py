"""Training spec and stack config: bad input fails early, naming the file, the key and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.config import ConfigError, load_stack_file
from model.estimators import build_pipeline
from model.spec import TrainingSpec, describe_errors

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "model_name": "demo",
    "dataset": "sklearn:wine",
    "target": "target",
    "task": "classification",
    "estimator": "random_forest",
}


def _error(**overrides: object) -> str:
    with pytest.raises(ValidationError) as info:
        TrainingSpec.model_validate({**BASE, **overrides})
    return describe_errors(info.value, "mlops:training.")


def test_unknown_estimator_lists_the_allowed_ones() -> None:
    message = _error(estimator="svm")
    assert "mlops:training.estimator" in message
    assert "'svm'" in message
    assert "hist_gradient_boosting, logistic_regression, random_forest" in message


def test_estimator_must_fit_the_task() -> None:
    message = _error(task="regression", estimator="logistic_regression")
    assert "unknown estimator 'logistic_regression' for task 'regression'" in message
    assert "ridge" in message


def test_unknown_param_lists_the_estimators_params() -> None:
    message = _error(params={"n_trees": 10})
    assert "mlops:training.params" in message
    assert "'n_trees'" in message and "n_estimators" in message


def test_bad_param_value_names_the_param() -> None:
    message = _error(params={"max_depth": -3})
    assert "max_depth" in message and "-3" in message


def test_gate_metric_must_exist_for_the_task() -> None:
    message = _error(gates={"thresholds": {"rmse": {"max": 1.0}}})
    assert "mlops:training.gates" in message
    assert "rmse" in message and "accuracy, f1, roc_auc, log_loss" in message


def test_seed_is_threaded_into_the_estimator() -> None:
    pipeline = build_pipeline("random_forest", "classification", {"n_estimators": 3}, seed=7)
    assert pipeline.named_steps["model"].random_state == 7
    assert pipeline.named_steps["model"].n_estimators == 3


def _project(tmp_path: Path, stack_yaml: str) -> Path:
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "Pulumi.dev.yaml").write_text(stack_yaml)
    return tmp_path


def test_repo_stacks_load() -> None:
    dev = load_stack_file("dev", REPO)
    assert dev.training is not None and dev.training.estimator == "random_forest"
    assert load_stack_file("prod", REPO).training is None


def test_config_error_names_stack_file_key_and_value(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "config:\n  mlops:training:\n    model_name: m\n    dataset: sklearn:wine\n"
        "    target: target\n    task: classification\n    estimator: xgboost\n",
    )
    with pytest.raises(ConfigError) as info:
        load_stack_file("dev", project)
    message = str(info.value)
    assert message.startswith("Pulumi.dev.yaml:")
    assert "mlops:training.estimator" in message and "'xgboost'" in message
    assert "random_forest" in message


def test_missing_key_and_wrong_type(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "config:\n  mlops:training:\n    model_name: m\n    dataset: sklearn:wine\n"
        "    task: classification\n    estimator: random_forest\n    seed: many\n",
    )
    with pytest.raises(ConfigError) as info:
        load_stack_file("dev", project)
    message = str(info.value)
    assert "mlops:training.target: Field required" in message
    assert "mlops:training.seed" in message and "'many'" in message


def test_unknown_stack_lists_the_known_ones(tmp_path: Path) -> None:
    project = _project(tmp_path, "config: {}\n")
    with pytest.raises(ConfigError, match=r"Pulumi.staging.yaml does not exist; stacks here: dev"):
        load_stack_file("staging", project)
