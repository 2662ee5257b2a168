"""ModelAlias through the real engine against a real MLflow server: `pulumi up` points the alias,
an alias moved by hand shows up in `pulumi preview --refresh`, `pulumi up --refresh` moves it
back, `pulumi destroy` removes it.

A project of its own holding one ModelAlias, so that the alias lives in a stack that really
updates (the stacks in tests/engine render their Kubernetes objects, and a stack in render mode
never moves aliases: nothing was rolled out). The dev stack on a real cluster does the same in
tests/cluster.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.engine.conftest import Engine, changed_steps
from tests.services import MlflowService

pytestmark = pytest.mark.slow

PROGRAM = """
import pulumi

from components.providers.model_alias import ModelAlias, ModelAliasArgs

config = pulumi.Config()
alias = ModelAlias(
    "champion",
    ModelAliasArgs(
        tracking_uri=config.require("tracking_uri"),
        model_name=config.require("model"),
        alias="champion",
        version=config.require("version"),
    ),
)
pulumi.export("version", alias.version)
"""


def _project(root: Path) -> Path:
    project = root / "alias-project"
    project.mkdir()
    runtime = {"name": "python", "options": {"toolchain": "pip", "virtualenv": sys.prefix}}
    (project / "Pulumi.yaml").write_text(yaml.safe_dump({"name": "alias-check", "runtime": runtime}))
    (project / "__main__.py").write_text(PROGRAM)
    return project


def test_an_alias_moved_by_hand_shows_in_preview_refresh(
    engine: Engine, mlflow_server: MlflowService, tmp_path: Path
) -> None:
    uri = mlflow_server.tracking_uri
    client = MlflowClient(uri, uri)
    name = f"alias-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, f"s3://nowhere/{name}/model")
    project = _project(tmp_path)

    def pulumi(*args: str) -> str:
        return engine.pulumi(*args, stack="alias", cwd=project).check().stdout

    engine.pulumi("stack", "init", "alias", cwd=project).check()
    for key, value in (("tracking_uri", uri), ("model", name), ("version", "1")):
        pulumi("config", "set", key, value)
    pulumi("up", "--yes", "--skip-preview")
    assert client.get_registered_model(name).aliases == {"champion": "1"}
    pulumi("preview", "--expect-no-changes")

    client.set_registered_model_alias(name, "champion", "2")  # by hand, outside Pulumi
    pulumi("preview", "--expect-no-changes")  # without a refresh the state cannot know
    refreshed = json.loads(pulumi("preview", "--refresh", "--json"))
    changes = changed_steps(refreshed)
    assert changes == {"pulumi-python:dynamic:Resource::champion": {"update"}}, changes
    (step,) = [s for s in refreshed["steps"] if s.get("op") == "update"]
    assert step["oldState"]["outputs"]["version"] == "2" and step["newState"]["inputs"]["version"] == "1"

    pulumi("up", "--refresh", "--yes", "--skip-preview")
    assert client.get_registered_model(name).aliases == {"champion": "1"}
    pulumi("destroy", "--yes", "--skip-preview")
    assert client.get_registered_model(name).aliases == {}
