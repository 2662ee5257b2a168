"""The one place that reads stack configuration: typed, validated, with errors that say the fix.

`load_settings()` reads through `pulumi.Config` inside the Pulumi program; `load_stack_file()`
reads the same keys from `Pulumi.yaml` defaults plus `Pulumi.<stack>.yaml`, for the `mlops`
CLI and `python -m model.train --stack`, which run without the engine. Both validate through
the same models, so a key means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from model.spec import RegistrySettings, TrainingSpec, describe_errors

__all__ = ["NAMESPACE", "ConfigError", "StackSettings", "load_settings", "load_stack_file", "project_dir"]

NAMESPACE = "mlops"
PROJECT_FILE = "Pulumi.yaml"


class ConfigError(ValueError):
    """Stack config that is missing or invalid; the message names the file and the key."""


class StackSettings(BaseModel):
    """Everything the program and the CLI need to know about one stack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stack: str
    training: TrainingSpec | None = None
    """The release to train in this stack; None for stacks that only serve a pinned release."""
    registry: RegistrySettings = RegistrySettings()


# Config keys (without the namespace) and the settings field each one fills.
_KEYS = {"training": "training", "registry": "registry"}


def project_dir(start: Path | None = None) -> Path:
    """The folder holding Pulumi.yaml, searching upwards from `start` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ConfigError(f"no {PROJECT_FILE} found in {here} or any parent folder")


def _build(stack: str, raw: dict[str, Any], source: str) -> StackSettings:
    values: dict[str, Any] = {"stack": stack}
    for key, field in _KEYS.items():
        if raw.get(key) is not None:
            values[field] = raw[key]
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc, NAMESPACE + ':')}") from None


def load_settings() -> StackSettings:
    """Read and validate this stack's config inside the Pulumi program."""
    import pulumi

    config = pulumi.Config(NAMESPACE)
    stack = pulumi.get_stack()
    raw = {key: config.get_object(key) for key in _KEYS}
    return _build(stack, raw, f"Pulumi.{stack}.yaml")


def load_stack_file(stack: str, start: Path | None = None) -> StackSettings:
    """Read and validate a stack's config from its YAML files, without the Pulumi engine."""
    root = project_dir(start)
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml")
        )
        raise ConfigError(f"{stack_file} does not exist; stacks here: {', '.join(known) or 'none'}")
    raw = _project_defaults(root / PROJECT_FILE)
    stack_config = _read_yaml(stack_file).get("config") or {}
    for full_key, value in stack_config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace == NAMESPACE:
            raw[key] = value
    return _build(stack, raw, stack_file.name)


def _project_defaults(project_file: Path) -> dict[str, Any]:
    declared = _read_yaml(project_file).get("config") or {}
    defaults: dict[str, Any] = {}
    for full_key, declaration in declared.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != NAMESPACE:
            continue
        if isinstance(declaration, dict) and ("default" in declaration or "value" in declaration):
            defaults[key] = declaration.get("value", declaration.get("default"))
        elif not isinstance(declaration, dict):
            defaults[key] = declaration
    return defaults


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must hold a mapping")
    return data
