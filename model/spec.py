"""The training spec and registry settings: typed, validated, shared by the CLI, the Job and infra."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from model.errors import BadConfig
from model.estimators import EstimatorError, Task, build_pipeline, estimator_info
from model.validation import describe_errors

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "GateSpec",
    "RegistrySettings",
    "SpecError",
    "Threshold",
    "TrainingSpec",
    "describe_errors",
    "load_spec_file",
]

METRICS: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
HIGHER_IS_BETTER = frozenset({"accuracy", "f1", "roc_auc", "r2"})


class SpecError(BadConfig):
    """A spec file that is missing, unreadable or invalid; the message names the file and key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Threshold(_Frozen):
    """An absolute bound on a metric; either side may be omitted."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs 'min' or 'max'")
        return self


class GateSpec(_Frozen):
    """Quality gates a release must pass before anything is registered."""

    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    max_regression: dict[str, float] = Field(default_factory=dict)
    """Largest allowed loss against the champion, per metric, in the metric's own units."""
    champion_alias: str = "champion"
    blocking: bool = True
    """False records failures but registers anyway (for exploratory stacks only)."""
    promote: bool = True
    """Move the champion alias to a release that passes every gate."""

    @field_validator("max_regression")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, delta in value.items():
            if delta < 0 or math.isnan(delta):
                raise ValueError(f"max_regression[{metric}] must be >= 0, got {delta}")
        return value


class TrainingSpec(_Frozen):
    """What to train: the `mlops:training` object of a stack, or a `--spec` file."""

    model_name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    dataset: str = Field(min_length=1)
    """Dataset URI: sklearn:<name>, a CSV/Parquet path, or s3://bucket/key."""
    target: str = Field(min_length=1)
    task: Task
    estimator: str
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    test_size: float = Field(default=0.25, gt=0.0, lt=1.0)
    gates: GateSpec = Field(default_factory=GateSpec)

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str, info: ValidationInfo) -> str:
        if "task" in info.data:
            try:
                estimator_info(value, info.data["task"])
            except EstimatorError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if {"task", "estimator", "seed"} <= info.data.keys():
            try:
                build_pipeline(info.data["estimator"], info.data["task"], value, info.data["seed"])
            except EstimatorError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("gates")
    @classmethod
    def _known_metrics(cls, value: GateSpec, info: ValidationInfo) -> GateSpec:
        if "task" in info.data:
            allowed = METRICS[info.data["task"]]
            named = set(value.thresholds) | set(value.max_regression)
            unknown = sorted(named - set(allowed))
            if unknown:
                raise ValueError(
                    f"unknown gate metric(s) {', '.join(unknown)} for task {info.data['task']!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        return value


class RegistrySettings(_Frozen):
    """Where releases are tracked and stored. Empty means the embedded default."""

    tracking_uri: str | None = None
    """MLflow tracking URI; unset runs MLflow on SQLite under .mlops/."""
    artifact_root: str | None = None
    """Where release artifacts go (s3://bucket[/prefix] or a local path); unset: .mlops/artifacts."""
    s3_endpoint_url: str | None = None
    """S3 API endpoint for S3-compatible stores (MinIO, SeaweedFS); unset means AWS."""

    def resolved(self, workdir: Path) -> RegistrySettings:
        """Fill the embedded defaults, anchored in `workdir`."""
        state = (workdir / ".mlops").resolve()
        return RegistrySettings(
            tracking_uri=self.tracking_uri or f"sqlite:///{state / 'mlflow.db'}",
            artifact_root=self.artifact_root or str(state / "artifacts"),
            s3_endpoint_url=self.s3_endpoint_url,
        )

    @property
    def is_embedded(self) -> bool:
        uri = self.tracking_uri or ""
        return not uri.startswith(("http://", "https://", "databricks"))


def load_spec_file(path: Path) -> TrainingSpec:
    """Read a spec from YAML or JSON; errors name the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"spec file {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return TrainingSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"spec file {path}: {describe_errors(exc)}") from None
