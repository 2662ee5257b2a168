"""`mlops:monitoring`: defaults, and bad values refused with the stack file, the key and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from components.alert_rules import AlertThresholds
from components.monitoring import MonitoringImages
from infra.config import (
    ConfigError,
    MonitoringSettings,
    RetrainSettings,
    StackSettings,
    duration_seconds,
    load_stack_file,
)

REPO = Path(__file__).resolve().parents[2]
RETRAIN = {"enabled": True, "repository": "acme/mlops", "dataset_prefix": "s3://datasets/breast-cancer/"}


def _load(tmp_path: Path, monitoring: Any, other: dict[str, Any] | None = None) -> StackSettings:
    stack = "dev"
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    config["mlops:monitoring"] = monitoring
    config.update(other or {})
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return load_stack_file(stack, root, assume_secrets=True)


def test_documented_defaults() -> None:
    settings = MonitoringSettings()
    assert settings.enabled is False and settings.mode.value == "bundled"
    assert (settings.namespace, settings.scrape_interval, settings.retention, settings.storage_size) == (
        "monitoring",
        "15s",
        "15d",
        "10Gi",
    )
    assert settings.grafana.enabled is True
    retrain = settings.retrain
    assert retrain.enabled is False and retrain.github_api_url == "https://api.github.com"
    assert retrain.min_interval == "6h" and retrain.min_interval_seconds == 6 * 3600
    assert retrain.alert_names == ("MLOpsModelDrift",) and retrain.repository is None


def test_thresholds_from_the_stack_file_reach_the_alert_builders(tmp_path: Path) -> None:
    settings = _load(tmp_path, {"enabled": True, "thresholds": {"drift_psi": "0.3", "drift_for": "15m"}})
    # Strings from YAML become numbers; unset keys keep the builders' defaults.
    assert settings.monitoring.thresholds == AlertThresholds(drift_psi=0.3, drift_for="15m")


def test_the_bootstrap_builds_the_deployed_versions() -> None:
    script = (REPO / "scripts" / "bootstrap-monitoring").read_text()
    versions = dict(
        line.split("=", 1) for line in script.splitlines() if line.startswith(("PROMTOOL_", "ALERTMANAGER_"))
    )
    assert MonitoringImages.prometheus.endswith(f":{versions['PROMTOOL_VERSION']}")
    assert MonitoringImages.alertmanager.endswith(f":{versions['ALERTMANAGER_VERSION']}")


def test_the_stack_files_turn_monitoring_on() -> None:
    dev = load_stack_file("dev", REPO)
    prod = load_stack_file("prod", REPO, assume_secrets=True)
    for settings in (dev, prod):
        assert settings.monitoring.enabled and settings.monitoring.mode.value == "bundled"
    for image in (prod.images.prometheus, prod.images.alertmanager, prod.images.grafana):
        assert "@sha256:" in image


@pytest.mark.parametrize(
    ("monitoring", "expected"),
    [
        (
            {"mode": "sidecar"},
            "mlops:monitoring.mode: Input should be 'bundled' or 'operator' (got 'sidecar')",
        ),
        (
            {"thresholds": {"drift_for": "10 minutes"}},
            "mlops:monitoring.thresholds: drift_for must be a Prometheus duration such as 10m, "
            "got '10 minutes'",
        ),
        (
            {"thresholds": {"error_ratio": 2}},
            "mlops:monitoring.thresholds: error_ratio must be in (0, 1), got 2.0",
        ),
        (
            {"thresholds": {"drift_min_window_rows": 0}},
            "mlops:monitoring.thresholds: drift_min_window_rows must be >= 1, got 0",
        ),
        (
            {"thresholds": {"drift_psi": "high"}},
            "mlops:monitoring.thresholds.drift_psi: Input should be a valid number",
        ),
        (
            {"thresholds": {"drift_fr": "15m"}},
            "mlops:monitoring.thresholds.drift_fr: Unexpected keyword argument (got '15m')",
        ),
        ({"retention": "0d"}, "mlops:monitoring.retention: retention must be longer than 0"),
        ({"storage_size": "lots"}, "mlops:monitoring.storage_size: String should match pattern"),
        ({"namespace": "Monitoring"}, "mlops:monitoring.namespace: String should match pattern"),
        ({"scrape": "15s"}, "mlops:monitoring.scrape: Extra inputs are not permitted"),
        (
            {"retrain": {"enabled": True}},
            "mlops:monitoring.retrain: enabled retraining needs repository and dataset_prefix",
        ),
        (
            {"retrain": {**RETRAIN, "repository": "acme"}},
            "mlops:monitoring.retrain.repository: must be <owner>/<name> of a GitHub repository",
        ),
        (
            {"retrain": {**RETRAIN, "dataset_prefix": "sklearn:breast_cancer"}},
            "mlops:monitoring.retrain.dataset_prefix: names a bundled dataset, which has no versions",
        ),
        (
            {"retrain": {**RETRAIN, "min_interval": "6 hours"}},
            "mlops:monitoring.retrain.min_interval: must be a Prometheus duration",
        ),
        (
            {"retrain": {**RETRAIN, "github_api_url": "http://github.example"}},
            "mlops:monitoring.retrain.github_api_url: must be https://<host>[/path]",
        ),
        (
            {"retrain": {**RETRAIN, "alert_names": ["Model Drift"]}},
            "alert name 'Model Drift' is not a valid Prometheus alert name",
        ),
        (
            {"operator_labels": {"release": "kube prometheus"}},
            "mlops:monitoring.operator_labels: release: 'kube prometheus' is not a Kubernetes label",
        ),
    ],
)
def test_bad_monitoring_config_names_the_file_and_key(
    tmp_path: Path, monitoring: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, monitoring)
    assert str(info.value).startswith("Pulumi.dev.yaml: ")
    assert expected in str(info.value)


def test_the_scrapers_namespace_has_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"enabled": True}, {"mlops:serving": {"monitoring_namespace": "observability"}})
    assert "monitoring_namespace moved to mlops:monitoring.namespace" in str(info.value)
    moved = _load(tmp_path, {"enabled": True, "namespace": "observability"})
    assert moved.monitoring.namespace == "observability"


def test_bad_monitoring_image_digest_is_refused(tmp_path: Path) -> None:
    images = {"prometheus": "docker.io/prom/prometheus@sha256:abc"}
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"enabled": True}, {"mlops:images": images})
    assert "prometheus: digest in 'docker.io/prom/prometheus@sha256:abc' is not sha256:<64 hex" in str(
        info.value
    )


def _settings(**monitoring: Any) -> StackSettings:
    base = load_stack_file("dev", REPO)
    return base.model_copy(update={"monitoring": MonitoringSettings.model_validate(monitoring)})


def test_missing_monitoring_secrets_say_how_to_set_them() -> None:
    problems = _settings(enabled=True, retrain=RETRAIN).missing_secrets()
    assert any(
        p.startswith("mlops:monitoring.grafana.enabled is true but mlops:grafana_admin_password is not set")
        and "pulumi config set --secret mlops:grafana_admin_password" in p
        for p in problems
    )
    for key in ("retrain_github_token", "retrain_webhook_token"):
        assert any(f"`pulumi config set --secret mlops:{key} " in p for p in problems), problems
    # Off, operator mode (no Grafana of ours) or without retraining: nothing is needed.
    assert _settings(enabled=False, retrain=RETRAIN).missing_secrets() == []
    assert _settings(enabled=True, mode="operator").missing_secrets() == []


def test_a_short_webhook_token_is_refused() -> None:
    settings = _settings(enabled=True, retrain=RETRAIN).model_copy(
        update={
            "grafana_admin_password": SecretStr("pw"),
            "retrain_github_token": SecretStr("ghp_x"),
            "retrain_webhook_token": SecretStr("short"),
        }
    )
    assert settings.missing_secrets() == [
        "mlops:retrain_webhook_token is shorter than 16 characters: set a random one with "
        '`pulumi config set --secret mlops:retrain_webhook_token "$(openssl rand -hex 32)"`'
    ]


def test_retrain_settings_accept_folders_and_s3_prefixes() -> None:
    assert (
        RetrainSettings.model_validate({**RETRAIN, "dataset_prefix": "data/versions/"}).dataset_prefix
        == "data/versions/"
    )
    assert RetrainSettings.model_validate(RETRAIN).dataset_prefix == "s3://datasets/breast-cancer/"


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("5m", 300), ("1h30m", 5400), ("6h", 21600), ("1d", 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds
