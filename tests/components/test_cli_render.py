"""`mlops render`: the credential-free view of a stack, checked against schemas and policies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_render_after_asyncio_run_in_the_same_process(tmp_path: Path) -> None:
    """`asyncio.run` (a test, the Automation API) leaves the thread without an event loop, which
    Pulumi's runtime needs; the render makes its own."""

    async def nothing() -> None:
        return None

    asyncio.run(nothing())
    result = CliRunner().invoke(
        app, ["render", "--stack", "prod", "--workdir", str(REPO), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_render_writes_and_checks_the_stack(stack: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["render", "--stack", stack, "--workdir", str(REPO), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    version = kubernetes_validate.latest_version()
    assert f"pass the Kubernetes {version} schemas and policy pack" in result.output
    resources = yaml.safe_load((tmp_path / "resources.yaml").read_text())
    assert resources["stack"] == stack
    assert any(r["type"] == "kubernetes:apps/v1:Deployment" for r in resources["resources"])
    assert list((tmp_path / "manifests").rglob("*.yaml"))


def test_render_of_unknown_stack_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["render", "--stack", "qa", "--workdir", str(REPO), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "Pulumi.qa.yaml does not exist" in result.output
