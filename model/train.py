"""`python -m model.train`: fit, evaluate the gates, log to MLflow, store and register one release.

Order matters so that nothing is half-written: gates are decided before any artifact is
written, artifacts are uploaded and verified before a version is registered, and a release
that is already registered is reported, never trained or registered twice.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import typer

from model.artifact import (
    MODEL_SUBDIR,
    PROFILE_FILE,
    RELEASE_FILE,
    ReleaseMetadata,
    directory_checksum,
    release_uri,
)
from model.data import DatasetError, load_dataset, split_dataset
from model.drift import ReferenceProfile, build_profile, sample_rows
from model.estimators import EstimatorError, build_pipeline, trusted_types
from model.evaluate import GateReport, compute_metrics, evaluate_gates
from model.lineage import code_hash, git_commit, release_id
from model.registry import (
    RELEASE_TAG,
    RegistryError,
    champion_metrics,
    connect,
    ensure_experiment,
    find_release,
    register_version,
    upload_release,
)
from model.runtime_bundle import export_runtime
from model.spec import RegistrySettings, TrainingSpec, load_spec_file

__all__ = ["GateFailure", "TrainingOutcome", "main", "plan_release", "train_release"]

Log = Callable[[str], None]


class GateFailure(RuntimeError):
    """A blocking gate failed: the run is logged for audit and nothing is registered."""

    def __init__(self, message: str, report: GateReport, run_id: str) -> None:
        super().__init__(message)
        self.report = report
        self.run_id = run_id


@dataclass(frozen=True)
class ReleasePlan:
    """What a spec resolves to before any training: the release identity and its inputs."""

    release_id: str
    dataset_hash: str
    code_hash: str
    rows: int


@dataclass(frozen=True)
class TrainingOutcome:
    status: Literal["registered", "exists"]
    model_name: str
    release_id: str
    version: str
    model_uri: str
    """Immutable URI of the MLflow model folder for this release."""
    run_id: str | None
    dataset_hash: str
    code_hash: str
    metrics: dict[str, float]
    gates: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def plan_release(spec: TrainingSpec) -> ReleasePlan:
    dataset = load_dataset(spec.dataset)
    dataset.features_and_target(spec.target)
    training_code = code_hash()
    return ReleasePlan(
        release_id(spec, dataset.content_hash, training_code),
        dataset.content_hash,
        training_code,
        len(dataset.frame),
    )


def train_release(
    spec: TrainingSpec, registry: RegistrySettings, workdir: Path, log: Log = print
) -> TrainingOutcome:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    registry = registry.resolved(workdir)
    assert registry.artifact_root is not None
    dataset = load_dataset(spec.dataset)
    dataset.features_and_target(spec.target)  # a wrong target fails before any registry work
    training_code = code_hash()
    rid = release_id(spec, dataset.content_hash, training_code)
    log(f"dataset {spec.dataset}: {len(dataset.frame)} rows, sha256 {dataset.content_hash[:12]}")
    log(f"release {rid} of {spec.model_name} (code {training_code[:12]})")

    client = connect(registry)
    existing = find_release(client, spec.model_name, rid)
    if existing is not None:
        log(f"release {rid} is already registered as version {existing.version}: nothing to do")
        run = client.get_run(existing.run_id) if existing.run_id else None
        return TrainingOutcome(
            "exists",
            spec.model_name,
            rid,
            existing.version,
            existing.source,
            existing.run_id,
            dataset.content_hash,
            training_code,
            dict(run.data.metrics) if run else {},
            # Only a release that passed (or ran non-blocking) is ever registered: the tag says which.
            {"passed": run.data.tags.get("mlops.gates") == "passed"} if run else {},
        )

    split = split_dataset(
        dataset, spec.target, spec.test_size, spec.seed, stratify=spec.task == "classification"
    )
    pipeline = build_pipeline(spec.estimator, spec.task, spec.params, spec.seed)
    started = time.perf_counter()
    log(f"fitting {spec.estimator} on {len(split.X_train)} rows")
    pipeline.fit(split.X_train, split.y_train)
    log(f"fitted in {time.perf_counter() - started:.2f}s")
    metrics = compute_metrics(spec.task, pipeline, split.X_test, split.y_test)
    log("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    champion = champion_metrics(client, spec.model_name, spec.gates.champion_alias)
    report = evaluate_gates(
        spec.gates, metrics, champion[1] if champion else None, champion[0] if champion else None
    )
    for result in report.results:
        log(f"gate {result.message}")

    experiment_id = ensure_experiment(client, spec.model_name, registry)
    commit = git_commit()
    lineage = {
        RELEASE_TAG: rid,
        "mlops.dataset_uri": spec.dataset,
        "mlops.dataset_hash": dataset.content_hash,
        "mlops.code_hash": training_code,
        **({"mlops.git_commit": commit} if commit else {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.model_name}-{rid}") as run:
        run_id = run.info.run_id
        mlflow.set_tags({**lineage, "mlops.gates": "passed" if report.passed else "failed"})
        mlflow.log_params({"estimator": spec.estimator, "seed": spec.seed, **spec.params})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report.as_dict(), "gates.json")
        if not report.passed and spec.gates.blocking:
            failures = "; ".join(r.message for r in report.failures)
            mlflow.end_run(status="FAILED")
            raise GateFailure(f"release {rid} failed its gates: {failures}", report, run_id)

        libraries = _library_versions()
        classification = spec.task == "classification"
        classes = [_plain(c) for c in pipeline.classes_] if classification else None
        with tempfile.TemporaryDirectory(prefix=f"release-{rid}-") as tmp:
            staging = Path(tmp)
            sample = split.X_train.head(5)
            mlflow.sklearn.save_model(
                pipeline,
                staging / MODEL_SUBDIR,
                serialization_format="skops",
                skops_trusted_types=trusted_types(spec.estimator, spec.task),
                signature=infer_signature(sample, pipeline.predict(sample)),
                input_example=sample,
                # MLflow infers these by re-importing the model in a subprocess (~10 s, most of
                # a release's overhead); we know exactly what loading the model needs.
                pip_requirements=[f"{n}=={v}" for n, v in libraries.items()],
            )
            profile = build_profile(
                split.X_train,
                pipeline.predict(split.X_train),
                classification=classification,
            )
            choice = export_runtime(
                pipeline,
                classes,
                _reference_rows(split.X_train, profile, sample),
                staging / MODEL_SUBDIR,
            )
            log(f"serving runtime: {choice.runtime.name} ({choice.reason})")
            mlflow.set_tag("mlops.serving_runtime", choice.runtime.name)
            mlflow.log_dict(profile.to_dict(), PROFILE_FILE)
            (staging / PROFILE_FILE).write_text(json.dumps(profile.to_dict(), indent=1))
            metadata = ReleaseMetadata(
                release_id=rid,
                model_name=spec.model_name,
                task=spec.task,
                estimator=spec.estimator,
                dataset_uri=spec.dataset,
                dataset_hash=dataset.content_hash,
                code_hash=training_code,
                git_commit=commit,
                model_sha256=directory_checksum(staging / MODEL_SUBDIR),
                metrics=metrics,
                gates=report.as_dict(),
                libraries=libraries,
                feature_names=[str(c) for c in split.X_train.columns],
                classes=classes,
                spec=spec.model_dump(mode="json"),
            )
            (staging / RELEASE_FILE).write_text(metadata.to_json())
            target = release_uri(registry.artifact_root, spec.model_name, rid)
            log(f"uploading artifacts to {target}")
            upload_release(staging, target)

        model_uri = f"{target}/{MODEL_SUBDIR}"
        version = register_version(
            client,
            spec.model_name,
            model_uri,
            run_id,
            {**lineage, "mlops.model_sha256": metadata.model_sha256},
        )
        log(f"registered {spec.model_name} version {version.version} from {model_uri}")
        if report.passed and spec.gates.promote:
            client.set_registered_model_alias(spec.model_name, spec.gates.champion_alias, version.version)
            log(f"alias {spec.gates.champion_alias!r} -> version {version.version}")

    return TrainingOutcome(
        "registered",
        spec.model_name,
        rid,
        str(version.version),
        model_uri,
        run_id,
        dataset.content_hash,
        training_code,
        metrics,
        report.as_dict(),
    )


def _reference_rows(X_train: pd.DataFrame, profile: ReferenceProfile, example: pd.DataFrame) -> np.ndarray:
    """The input example plus rows sampled from the profile: what the serving runtime is checked on."""
    integer = frozenset(str(c) for c in X_train.columns if pd.api.types.is_integer_dtype(X_train[c]))
    return np.vstack([example.to_numpy(dtype=np.float64), sample_rows(profile, integer)])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")}


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    stack: Annotated[
        str | None,
        typer.Option(help="Read mlops:training and the registry from Pulumi.<stack>.yaml."),
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="Read the training spec from this YAML/JSON file.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_URI")] = None,
    artifact_root: Annotated[str | None, typer.Option(envvar="MLOPS_ARTIFACT_ROOT")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(envvar="MLFLOW_S3_ENDPOINT_URL")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the embedded registry lives (.mlops/).")] = Path("."),
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")] = False,
) -> None:
    """Train, gate and register the release described by a stack or a spec file."""
    from rich.console import Console

    console = Console(stderr=True)
    if (stack is None) == (spec is None):
        console.print("[red]error:[/] give exactly one of --stack NAME or --spec FILE")
        raise typer.Exit(2)
    try:
        if stack is not None:
            from infra.config import ConfigError, load_stack_file

            try:
                settings = load_stack_file(stack, workdir)
            except ConfigError as exc:
                console.print(f"[red]error:[/] {exc}")
                raise typer.Exit(2) from None
            if settings.training is None:
                console.print(
                    f"[red]error:[/] stack {stack!r} has no mlops:training spec (it does not train)"
                )
                raise typer.Exit(2)
            training, registry = settings.training, settings.registry
        else:
            assert spec is not None
            training, registry = load_spec_file(spec), RegistrySettings()
        registry = RegistrySettings(
            tracking_uri=tracking_uri or registry.tracking_uri,
            artifact_root=artifact_root or registry.artifact_root,
            s3_endpoint_url=s3_endpoint_url or registry.s3_endpoint_url,
        )
        outcome = train_release(training, registry, workdir, log=lambda m: console.print(m, highlight=False))
    except GateFailure as exc:
        console.print(f"[red]gate failed:[/] {exc}")
        raise typer.Exit(1) from None
    except (DatasetError, EstimatorError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except RegistryError as exc:
        console.print(f"[red]registry error:[/] {exc}")
        raise typer.Exit(3) from None
    if json_out:
        sys.stdout.write(json.dumps(outcome.as_dict(), sort_keys=True) + "\n")


if __name__ == "__main__":
    app()
