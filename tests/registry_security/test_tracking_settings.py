"""`mlops:tracking`'s security knobs: prod runs an authenticated MLflow without wildcards, each
bad value is refused naming its key, and the program renders what the settings say."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from infra.config import ConfigError, load_stack_file
from infra.render import run_program

REPO = Path(__file__).resolve().parents[2]
PASSWORD_KEY = "mlops:tracking_admin_password"


def _stack(tmp_path: Path, stack: str, tracking: dict[str, Any], replace: bool = False) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra", target_is_directory=True)
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    config["mlops:tracking"] = tracking if replace else {**config["mlops:tracking"], **tracking}
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return root


def test_prod_requires_a_user_and_answers_its_own_names() -> None:
    prod = load_stack_file("prod", REPO)
    assert prod.tracking_auth is True
    assert prod.tracking.server_hosts == ("mlflow.example.internal",)
    assert prod.tracking.server_origins == ("https://mlflow.example.internal",)
    dev = load_stack_file("dev", REPO)
    assert dev.tracking_auth is False and dev.tracking.server_hosts == () == dev.tracking.server_origins


@pytest.mark.parametrize(
    ("stack", "tracking", "message"),
    [
        ("prod", {"auth": False}, "mlops:tracking.auth: prod must not run MLflow without authentication"),
        (
            "prod",
            {"allowed_hosts": ["*.example.com"]},
            "mlops:tracking.allowed_hosts: ['*.example.com'] has a wildcard",
        ),
        ("prod", {"allowed_hosts": ["*"]}, "mlops:tracking.allowed_hosts: ['*'] has a wildcard"),
        (
            "prod",
            {"cors_allowed_origins": ["*"]},
            "mlops:tracking.cors_allowed_origins: ['*'] has a wildcard",
        ),
        ("dev", {"allowed_hosts": ["evil.example/x"]}, "mlops:tracking.allowed_hosts.0: String should match"),
        (
            "dev",
            {"cors_allowed_origins": ["ui.example.com"]},
            "mlops:tracking.cors_allowed_origins.0: String should match",
        ),
        (
            "dev",
            {"cors_allowed_origins": ["https://ui.example.com/app"]},
            "cors_allowed_origins.0: String should match",
        ),
        ("dev", {"admin_username": "a b"}, "mlops:tracking.admin_username: String should match"),
        (
            "dev",
            {"backend": "external", "server_url": "https://m.example", "allowed_hosts": ["m.example"]},
            "with server_url 'https://m.example' there is none: remove them",
        ),
    ],
)
def test_bad_tracking_security_names_the_key(
    tmp_path: Path, stack: str, tracking: dict[str, Any], message: str
) -> None:
    root = _stack(tmp_path, stack, tracking, replace="server_url" in tracking)
    with pytest.raises(ConfigError) as err:
        load_stack_file(stack, root, assume_secrets=True)
    assert str(err.value).startswith(f"Pulumi.{stack}.yaml: ") and message in str(err.value)


def test_wildcards_and_no_auth_are_a_choice_outside_prod(tmp_path: Path) -> None:
    root = _stack(tmp_path, "dev", {"allowed_hosts": ["*.dev.example"], "cors_allowed_origins": ["*"]})
    assert load_stack_file("dev", root).tracking.allowed_hosts == ("*.dev.example",)
    # An MLflow prod does not deploy (server_url) is not the stack's to lock: no default login.
    external = {"backend": "external", "server_url": "https://mlflow.example.internal"}
    (tmp_path / "p").mkdir()
    prod = load_stack_file("prod", _stack(tmp_path / "p", "prod", external, replace=True))
    assert prod.tracking_auth is False


def test_the_admin_password_is_required_and_long_enough() -> None:
    prod = load_stack_file("prod", REPO)
    unset = prod.model_copy(update={"tracking": prod.tracking.model_copy(update={"auth": None})})
    assert any(
        f"MLflow authentication is on (prod requires it) but {PASSWORD_KEY} is not set: run "
        f"`pulumi config set --secret {PASSWORD_KEY}" in p
        for p in unset.missing_secrets()
    )
    short = prod.model_copy(update={"tracking_admin_password": SecretStr("short")})
    assert any(f"{PASSWORD_KEY} is shorter than 12 characters" in p for p in short.missing_secrets())
    good = prod.model_copy(update={"tracking_admin_password": SecretStr("a-long-enough-pass")})
    assert not any(PASSWORD_KEY in p for p in good.missing_secrets())
    dev = load_stack_file("dev", REPO)
    on = dev.model_copy(update={"tracking": dev.tracking.model_copy(update={"auth": True})})
    assert any(f"(mlops:tracking.auth is true) but {PASSWORD_KEY}" in p for p in on.missing_secrets())


def test_the_program_renders_prods_locked_down_mlflow() -> None:
    render = run_program("prod", REPO)
    mlflow = render.find("kubernetes:apps/v1:Deployment", "registry-mlflow").inputs
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--app-name=basic-auth" in args
    hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "mlflow.example.internal" in hosts and "mlflow.mlops-prod.svc.cluster.local:*" in hosts
    assert not [h for h in hosts if h.rstrip(":*").endswith("*") or h == "*"]
    assert "--cors-allowed-origins=https://mlflow.example.internal" in args
    assert not [a for a in args if "disable-security" in a]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    assert "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE" not in env
    secret = render.find("kubernetes:core/v1:Secret", "registry-mlflow-auth").inputs
    assert set(secret["stringData"]) == {
        "basic_auth.ini",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    }
    assert set(secret["stringData"].values()) == {"[secret]"}
    client = render.find("kubernetes:core/v1:Secret", "registry-mlflow-client").inputs
    assert client["stringData"] == {
        "MLFLOW_TRACKING_USERNAME": "[secret]",
        "MLFLOW_TRACKING_PASSWORD": "[secret]",
    }


def test_the_program_gives_devs_training_job_no_login() -> None:
    render = run_program("dev", REPO)
    mlflow = render.find("kubernetes:apps/v1:Deployment", "registry-mlflow").inputs
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--app-name=basic-auth" not in args and not [a for a in args if a.startswith("--cors")]
    names = {r.name for r in render.resources}
    assert "registry-mlflow-auth" not in names and "registry-mlflow-client" not in names
    job = next(o for o in render.kubernetes_objects if o["kind"] == "Job")
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MLFLOW_TRACKING_PASSWORD" not in env
