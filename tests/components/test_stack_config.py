"""Stack config: every key declared, and bad config fails naming the stack file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import FLAG_KEYS, OBJECT_KEYS, SECRET_KEYS, ConfigError, StackSettings, load_stack_file
from infra.render import run_program

REPO = Path(__file__).resolve().parents[2]


def test_every_key_the_program_reads_is_declared() -> None:
    declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    keys = {f"mlops:{k}" for k in (*OBJECT_KEYS, *FLAG_KEYS, *SECRET_KEYS)}
    assert keys == set(declared)
    assert {k for k in StackSettings.model_fields if k != "stack"} == {*OBJECT_KEYS, *FLAG_KEYS, *SECRET_KEYS}
    for key in FLAG_KEYS:
        assert declared[f"mlops:{key}"]["type"] == "boolean" and declared[f"mlops:{key}"]["description"]
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


def _dev_with(**serving_and_network: Any) -> str:
    config = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    for key, fields in serving_and_network.items():
        config[f"mlops:{key}"] = {**(config.get(f"mlops:{key}") or {}), **fields}
    return str(yaml.safe_dump({"config": config}))


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            {"serving": {"service_type": "NodePort"}},
            "mlops:serving: service_type NodePort exposes the model outside the cluster: list its "
            "clients' CIDRs in client_cidrs",
        ),
        (
            {"serving": {"service_type": "LoadBalancer", "client_cidrs": ["203.0.113.300/24"]}},
            "mlops:serving.client_cidrs: '203.0.113.300/24' is not a CIDR such as 203.0.113.0/24",
        ),
        (
            {"serving": {"progress_deadline_seconds": 120}},
            "mlops:serving: progress_deadline_seconds (120) must exceed the 135 s a new pod may need",
        ),
        ({"serving": {"min_ready_seconds": 0}}, "mlops:serving.min_ready_seconds: Input should be greater"),
        ({"serving": {"workers": 65}}, "mlops:serving.workers: Input should be less than or equal to 64"),
        (
            {"network": {"node_cidrs": ["10.0.0.1/24"]}},
            "mlops:network.node_cidrs: '10.0.0.1/24' is not a CIDR",
        ),
        ({"network": {"egress_cidrs": []}}, "mlops:network.egress_cidrs: Tuple should have at least 1 item"),
        (
            {"network": {"tracking_client_namespaces": ["Ingress"]}},
            "mlops:network.tracking_client_namespaces.0",
        ),
    ],
)
def test_exposure_rollout_and_network_settings_are_checked(edits: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_stack_file("dev", REPO, text=_dev_with(**edits))
    assert expected in str(err.value), str(err.value)


def test_exposure_and_network_settings_are_read_normalised() -> None:
    text = _dev_with(
        serving={"service_type": "NodePort", "client_cidrs": ["203.0.113.0/24", "192.0.2.7"]},
        network={"node_cidrs": ["10.0.0.0/24"], "tracking_client_namespaces": ["ingress-nginx"]},
    )
    settings = load_stack_file("dev", REPO, text=text)
    assert settings.serving.client_cidrs == ("203.0.113.0/24", "192.0.2.7/32")
    assert (settings.serving.min_ready_seconds, settings.serving.progress_deadline_seconds) == (10, 300)
    assert settings.network.node_cidrs == ("10.0.0.0/24",)
    assert settings.network.egress_cidrs == ("0.0.0.0/0", "::/0")
    assert settings.network.tracking_client_namespaces == ("ingress-nginx",)
