"""Stack config: every key declared, and bad config fails naming the stack file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import OBJECT_KEYS, SECRET_KEYS, ConfigError, StackSettings, load_stack_file
from infra.render import run_program

REPO = Path(__file__).resolve().parents[2]


def test_every_key_the_program_reads_is_declared() -> None:
    declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    keys = {f"mlops:{k}" for k in (*OBJECT_KEYS, *SECRET_KEYS)}
    assert keys == set(declared)
    assert {k for k in StackSettings.model_fields if k != "stack"} == set(OBJECT_KEYS) | set(SECRET_KEYS)
    for key in SECRET_KEYS:
        assert declared[f"mlops:{key}"]["type"] == "string" and declared[f"mlops:{key}"]["default"] == ""
        assert "pulumi config set --secret" in declared[f"mlops:{key}"]["description"]
    for key in OBJECT_KEYS:
        assert declared[f"mlops:{key}"]["description"]


def test_stack_files_in_the_repo_load() -> None:
    dev = load_stack_file("dev", REPO)
    assert dev.training is not None and dev.release is None and dev.serving.replicas == 1
    prod = load_stack_file("prod", REPO, assume_secrets=True)
    assert prod.training is None and prod.release is not None and prod.serving.replicas >= 3


def _stack(tmp_path: Path, stack: str, edit: Any) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    edit(config)
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return root


def _set(path: str, value: Any) -> Any:
    def edit(config: dict[str, Any]) -> None:
        key, *rest = path.split(".")
        target = config.setdefault(key, {})
        for part in rest[:-1]:
            target = target.setdefault(part, {})
        target[rest[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("stack", "edit", "expected"),
    [
        ("dev", lambda c: c.pop("mlops:artifacts"), "mlops:artifacts is required"),
        ("dev", lambda c: c["mlops:training"].pop("target"), "mlops:training.target: Field required"),
        (
            "dev",
            _set("mlops:serving.replicas", "three"),
            "mlops:serving.replicas: Input should be a valid integer",
        ),
        (
            "dev",
            _set("mlops:training.estimator", "deep_forest"),
            "mlops:training.estimator: unknown estimator",
        ),
        (
            "prod",
            _set("mlops:serving.replicas", 0),
            "mlops:serving.replicas: Input should be greater than or equal to 1",
        ),
        ("prod", _set("mlops:release.release_id", "latest"), "mlops:release.release_id: String should match"),
        (
            "prod",
            _set("mlops:container_registry.mode", "docker-hub"),
            "mlops:container_registry.mode: Input should be",
        ),
        ("prod", _set("mlops:serving.surge", 2), "mlops:serving.surge: Extra inputs are not permitted"),
        (
            "dev",
            _set("mlops:tracking.server_url", "https://mlflow.example"),
            "node_port exposes an in-cluster MLflow; with server_url 'https://mlflow.example' there is none",
        ),
        ("dev", _set("mlops:tracking.host_tracking_uri", "mlflow:5000"), "mlops:tracking.host_tracking_uri"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path: Path, stack: str, edit: Any, expected: str) -> None:
    root = _stack(tmp_path, stack, edit)
    with pytest.raises(ConfigError) as err:
        run_program(stack, root)
    message = str(err.value)
    assert message.startswith(f"Pulumi.{stack}.yaml: "), message
    assert expected in message, message


def test_unknown_estimator_lists_the_allowed_ones(tmp_path: Path) -> None:
    root = _stack(tmp_path, "dev", _set("mlops:training.estimator", "deep_forest"))
    with pytest.raises(ConfigError, match=r"random_forest"):
        load_stack_file("dev", root)


def test_missing_secret_says_how_to_set_it() -> None:
    """Inside the program (secrets decrypted by the engine), a needed secret that is unset fails."""
    from infra.config import load_settings
    from infra.render import mocked_runtime, stack_config

    config, _ = stack_config("prod", REPO)
    config = {k: v for k, v in config.items() if k != "mlops:tracking_database_url"}
    with mocked_runtime("prod", config, []) as (_, run), pytest.raises(ConfigError) as err:
        run(load_settings)
    message = str(err.value)
    assert message.startswith("Pulumi.prod.yaml: ")
    assert "pulumi config set --secret mlops:tracking_database_url" in message
    # The YAML reader cannot decrypt secrets and does not judge them.
    assert load_stack_file("prod", REPO).tracking_database_url is None


def test_the_program_validates_through_load_settings() -> None:
    """Inside the program, config comes from pulumi.Config; the same errors name the file."""
    import json

    from infra.config import load_settings
    from infra.render import mocked_runtime

    config = {
        "mlops:release": json.dumps({"model_name": "m"}),
        "mlops:artifacts": json.dumps({"bucket": "abc"}),
    }
    with mocked_runtime("qa", config, []) as (_, run), pytest.raises(ConfigError) as err:
        run(load_settings)
    assert str(err.value).startswith("Pulumi.qa.yaml: mlops:release.release_id: Field required")
