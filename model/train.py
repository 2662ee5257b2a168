"""`python -m model.train`: fit, evaluate the gates, log to MLflow, store and register one release.

Order matters so that nothing is half-written: the release id is checked against the one the
Pulumi program planned before any registry call, gates are decided before any artifact is
written, the release folder is committed (`model.release_store`: every object verified, then
release.json last) before a version is registered, and a release that is already registered is
reported, never trained or registered twice. A re-run after a crash finishes the folder, uploading
only what is missing or differs, and a folder already committed is adopted as it is. Each way a release
can end has one exit code (`model.errors.ExitCode`), shared with `mlops release` and the
training Job; only a registry or store failure is retried (`--retries`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import typer

from model.artifact import (
    MODEL_SUBDIR,
    PROFILE_FILE,
    RELEASE_FILE,
    Registration,
    ReleaseMetadata,
    directory_checksum,
    release_uri,
)
from model.data import Dataset, S3Access, Split, load_dataset, split_dataset
from model.drift import ReferenceProfile, build_profile, sample_rows
from model.errors import ExitCode, ReleaseError, ReleaseMismatch, exit_code_for
from model.estimators import build_pipeline, trusted_types
from model.evaluate import GateReport, compute_metrics, evaluate_gates
from model.lineage import ReleaseInputs, code_hash, git_commit, training_runtime
from model.registry import (
    CANDIDATE_ALIAS,
    RELEASE_TAG,
    client_environment,
    connect,
    ensure_experiment,
    find_champion,
    find_release,
    register_version,
    registry_call,
    set_alias,
    write_registration,
)
from model.release_store import Published, publish_release
from model.runtime_bundle import export_runtime
from model.spec import RegistrySettings, TrainingSpec, load_spec_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "GateFailure",
    "ReleaseOptions",
    "TrainingOutcome",
    "describe_failure",
    "main",
    "train_release",
]

Log = Callable[[str], None]


class GateFailure(ReleaseError, RuntimeError):
    """A blocking gate failed: the run is logged for audit and nothing is registered."""

    exit_code = ExitCode.GATE_FAILED

    def __init__(self, message: str, report: GateReport, run_id: str) -> None:
        super().__init__(message)
        self.report = report
        self.run_id = run_id


@dataclass(frozen=True)
class ReleaseOptions:
    expected: ReleaseInputs | None = None
    """What the Pulumi program planned; a different release id stops before any registry call."""
    promote: bool | None = None
    """Move the champion alias to the new version here; None follows the spec's gates.promote.
    The training Job passes False: in a cluster, champion moves only after the rollout."""
    git_commit: str | None = None
    """Lineage only (a tag and a field of release.json); None: `model.lineage.git_commit()`."""
    on_stored: Callable[[str], None] | None = None
    """Called with each object's path once the release folder holds it, the commit marker last
    (progress; the crash-safety tests stop the store from here)."""


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
    runtime: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class _Fitted:
    pipeline: Any
    split: Split
    metrics: dict[str, float]


@dataclass(frozen=True)
class _Job:
    """One release in the making: what every step after the dataset needs."""

    client: MlflowClient
    spec: TrainingSpec
    registry: RegistrySettings
    store: S3Access
    inputs: ReleaseInputs
    options: ReleaseOptions
    log: Log

    @property
    def target(self) -> str:
        """The release folder's immutable URI."""
        assert self.registry.artifact_root is not None  # resolved
        return release_uri(self.registry.artifact_root, self.spec.model_name, self.inputs.release_id)


def train_release(
    spec: TrainingSpec,
    registry: RegistrySettings,
    workdir: Path,
    log: Log = print,
    options: ReleaseOptions | None = None,
) -> TrainingOutcome:
    options = options or ReleaseOptions()
    registry = registry.resolved(workdir)
    # The same store as the artifacts (the Job's MLFLOW_S3_ENDPOINT_URL), ambient credentials.
    store = S3Access(endpoint_url=registry.s3_endpoint_url or S3Access.from_env().endpoint_url)
    dataset = load_dataset(spec.dataset, store)
    dataset.identity.check_target(spec.target)  # a wrong target fails before any registry work
    inputs = ReleaseInputs.of(spec, dataset.content_hash, code_hash(), training_runtime())
    log(f"dataset {spec.dataset}: {len(dataset.frame)} rows, sha256 {dataset.content_hash[:12]}")
    log(f"release {inputs.release_id} of {spec.model_name} (code {inputs.code_hash[:12]})")
    _check_expected(inputs, options.expected, log)

    job = _Job(connect(registry), spec, registry, store, inputs, options, log)
    existing = find_release(job.client, spec.model_name, inputs.release_id)
    if existing is not None:
        log(f"release {inputs.release_id} is already registered as version {existing.version}: nothing to do")
        _ensure_registration(job, existing.version)
        return _existing_outcome(job, existing.version, existing.source, existing.run_id)

    fitted = _fit(spec, dataset, log)
    report = _evaluate(job.client, spec, fitted.metrics, log)
    run_id, version = _run_and_register(job, fitted, report)
    _ensure_registration(job, version)
    _set_aliases(job.client, spec, version, report.passed, options, log)
    return TrainingOutcome(
        "registered",
        spec.model_name,
        inputs.release_id,
        version,
        f"{job.target}/{MODEL_SUBDIR}",
        run_id,
        dataset.content_hash,
        inputs.code_hash,
        fitted.metrics,
        report.as_dict(),
        inputs.runtime,
    )


def _run_and_register(job: _Job, fitted: _Fitted, report: GateReport) -> tuple[str, str]:
    """The audit run, and in it the gate decision, the committed release folder and then the
    version; returns (run id, version)."""
    commit = job.options.git_commit or git_commit()
    lineage = _lineage_tags(job.spec, job.inputs, commit)
    run_id = _start_run(job.client, job.spec, job.registry, lineage, report, fitted.metrics)
    try:
        if not report.passed and job.spec.gates.blocking:
            failures = "; ".join(r.message for r in report.failures)
            raise GateFailure(f"release {job.inputs.release_id} failed its gates: {failures}", report, run_id)
        published = _store_release(job, run_id, fitted, report, commit)
        # Only now, with the folder committed: a version never names a half-written release.
        version = register_version(
            job.client,
            job.spec.model_name,
            f"{job.target}/{MODEL_SUBDIR}",
            run_id,
            {**lineage, "mlops.model_sha256": published.metadata.model_sha256},
        )
    except BaseException:
        _end_run(job.client, run_id, "FAILED")
        raise
    _end_run(job.client, run_id, "FINISHED")
    job.log(f"registered {job.spec.model_name} version {version.version} from {job.target}/{MODEL_SUBDIR}")
    return run_id, str(version.version)


def _check_expected(inputs: ReleaseInputs, expected: ReleaseInputs | None, log: Log) -> None:
    if expected is None:
        return
    if inputs.release_id == expected.release_id:
        log(f"release id {inputs.release_id} matches the one `pulumi preview` planned")
        return
    differs = "; ".join(inputs.differences(expected)) or "no input differs (the id formula changed)"
    raise ReleaseMismatch(
        f"this Job computes release {inputs.release_id}, but `pulumi preview` planned release "
        f"{expected.release_id}: {differs}. Nothing was registered. The training image or the "
        "dataset is not what the program saw: rebuild the training image from the same commit, "
        "or check that the dataset did not change after the preview, then run `pulumi up` again."
    )


def _existing_outcome(job: _Job, version: str, source: str, run_id: str | None) -> TrainingOutcome:
    with registry_call(f"reading the run of {job.spec.model_name} version {version}"):
        run = job.client.get_run(run_id) if run_id else None
    return TrainingOutcome(
        "exists",
        job.spec.model_name,
        job.inputs.release_id,
        version,
        source,
        run_id,
        job.inputs.dataset_hash,
        job.inputs.code_hash,
        dict(run.data.metrics) if run else {},
        # Only a release that passed (or ran non-blocking) is ever registered: the tag says which.
        {"passed": run.data.tags.get("mlops.gates") == "passed"} if run else {},
        job.inputs.runtime,
    )


def _fit(spec: TrainingSpec, dataset: Dataset, log: Log) -> _Fitted:
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
    return _Fitted(pipeline, split, metrics)


def _evaluate(client: MlflowClient, spec: TrainingSpec, metrics: dict[str, float], log: Log) -> GateReport:
    """The gates, against the champion when there is one (fails closed on registry errors)."""
    champion = find_champion(client, spec.model_name, spec.gates.champion_alias)
    report = evaluate_gates(
        spec.gates,
        metrics,
        champion.metrics if champion else None,
        champion.version if champion else None,
    )
    skipped = " (no version has that alias: regression gates skipped)" if champion is None else ""
    log(f"champion ({spec.gates.champion_alias}): {report.champion}{skipped}")
    for result in report.results:
        log(f"gate {result.message}")
    return report


def _lineage_tags(spec: TrainingSpec, inputs: ReleaseInputs, commit: str | None) -> dict[str, str]:
    return {
        RELEASE_TAG: inputs.release_id,
        "mlops.dataset_uri": spec.dataset,
        "mlops.dataset_hash": inputs.dataset_hash,
        "mlops.code_hash": inputs.code_hash,
        **{f"mlops.runtime.{name}": v for name, v in inputs.runtime.items()},
        **({"mlops.git_commit": commit} if commit else {}),
    }


def _start_run(
    client: MlflowClient,
    spec: TrainingSpec,
    registry: RegistrySettings,
    lineage: dict[str, str],
    report: GateReport,
    metrics: dict[str, float],
) -> str:
    """The audit run: lineage, params, metrics and the gate report, whatever the gates decided."""
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = ensure_experiment(client, spec.model_name, registry)
    run_name = f"{spec.model_name}-{lineage[RELEASE_TAG]}"
    now = int(time.time() * 1000)
    tags = {**lineage, "mlops.gates": "passed" if report.passed else "failed"}
    params = {"estimator": spec.estimator, "seed": spec.seed, **spec.params}
    with registry_call(f"logging the run of {run_name} to {client.tracking_uri}"):
        run_id = str(client.create_run(experiment_id, run_name=run_name).info.run_id)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.log_dict(run_id, report.as_dict(), "gates.json")
    return run_id


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    if status == "FINISHED":
        with registry_call(f"finishing run {run_id}"):
            client.set_terminated(run_id, status)
        return
    # Best effort, once and quickly: the failure being reported may be that MLflow is gone,
    # and MLflow's own retries would hold that report back for minutes.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    with client_environment(quick), contextlib.suppress(Exception):
        client.set_terminated(run_id, status)


def _store_release(
    job: _Job, run_id: str, fitted: _Fitted, report: GateReport, commit: str | None
) -> Published:
    """Stage the release folder (model, profile, record), then publish and commit it."""
    with tempfile.TemporaryDirectory(prefix=f"release-{job.inputs.release_id}-") as tmp:
        metadata = _stage_release(Path(tmp), job, run_id, fitted, report, commit)
        job.log(f"uploading artifacts to {job.target}")
        published = publish_release(Path(tmp), job.target, metadata, job.store, job.options.on_stored)
    if published.adopted:
        job.log(f"{job.target} already holds this release, committed: uploaded nothing")
    else:
        job.log(
            f"stored {len(published.uploaded) - 1} objects ({published.kept} already there with the "
            f"same SHA-256), then the commit marker {RELEASE_FILE}"
        )
    return published


def _stage_release(
    staging: Path, job: _Job, run_id: str, fitted: _Fitted, report: GateReport, commit: str | None
) -> ReleaseMetadata:
    """Write model/ and the reference profile into `staging`; returns the release record."""
    spec, pipeline, X_train = job.spec, fitted.pipeline, fitted.split.X_train
    libraries = _library_versions()
    classes = [_plain(c) for c in pipeline.classes_] if spec.task == "classification" else None
    sample = X_train.head(5)
    _save_model(staging / MODEL_SUBDIR, spec, pipeline, sample, libraries)
    profile = build_profile(X_train, pipeline.predict(X_train), classification=classes is not None)
    choice = export_runtime(
        pipeline, classes, _reference_rows(X_train, profile, sample), staging / MODEL_SUBDIR
    )
    job.log(f"serving runtime: {choice.runtime.name} ({choice.reason})")
    with registry_call(f"logging the profile of run {run_id}"):
        job.client.set_tag(run_id, "mlops.serving_runtime", choice.runtime.name)
        job.client.log_dict(run_id, profile.to_dict(), PROFILE_FILE)
    (staging / PROFILE_FILE).write_text(json.dumps(profile.to_dict(), indent=1))
    return ReleaseMetadata(
        release_id=job.inputs.release_id,
        model_name=spec.model_name,
        task=spec.task,
        estimator=spec.estimator,
        dataset_uri=spec.dataset,
        dataset_hash=job.inputs.dataset_hash,
        code_hash=job.inputs.code_hash,
        git_commit=commit,
        model_sha256=directory_checksum(staging / MODEL_SUBDIR),
        metrics=fitted.metrics,
        gates=report.as_dict(),
        libraries=libraries,
        feature_names=[str(c) for c in X_train.columns],
        classes=classes,
        spec=spec.model_dump(mode="json"),
        inputs=job.inputs.to_dict(),
    )


def _save_model(
    model_dir: Path, spec: TrainingSpec, pipeline: Any, sample: pd.DataFrame, libraries: dict[str, str]
) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.sklearn.save_model(
        pipeline,
        model_dir,
        serialization_format="skops",
        skops_trusted_types=trusted_types(spec.estimator, spec.task),
        signature=infer_signature(sample, pipeline.predict(sample)),
        input_example=sample,
        # MLflow infers these by re-importing the model in a subprocess (~10 s, most of
        # a release's overhead); we know exactly what loading the model needs.
        pip_requirements=[f"{n}=={v}" for n, v in libraries.items()],
    )


def _ensure_registration(job: _Job, version: str) -> None:
    write_registration(job.target, Registration(job.spec.model_name, job.inputs.release_id, version))


def _set_aliases(
    client: MlflowClient, spec: TrainingSpec, version: str, passed: bool, options: ReleaseOptions, log: Log
) -> None:
    """`candidate` for every version that passed; champion too when this process promotes."""
    if not passed:
        log(f"gates failed (non-blocking): version {version} gets no alias")
        return
    set_alias(client, spec.model_name, CANDIDATE_ALIAS, version)
    log(f"alias {CANDIDATE_ALIAS!r} -> version {version}")
    promote = spec.gates.promote if options.promote is None else options.promote
    if promote:
        set_alias(client, spec.model_name, spec.gates.champion_alias, version)
        log(f"alias {spec.gates.champion_alias!r} -> version {version}")


def _reference_rows(X_train: pd.DataFrame, profile: ReferenceProfile, example: pd.DataFrame) -> np.ndarray:
    """The input example plus rows sampled from the profile: what the serving runtime is checked on."""
    integer = frozenset(str(c) for c in X_train.columns if pd.api.types.is_integer_dtype(X_train[c]))
    return np.vstack([example.to_numpy(dtype=np.float64), sample_rows(profile, integer)])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")}


_LABELS = {
    ExitCode.CRASHED: "crashed",
    ExitCode.BAD_CONFIG: "error",
    ExitCode.REGISTRY: "registry error",
    ExitCode.RELEASE_MISMATCH: "release mismatch",
    ExitCode.GATE_FAILED: "gate failed",
}


def describe_failure(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code for a failed release and the one line that says why."""
    code = exit_code_for(exc)
    return code, f"{_LABELS[code]} (exit {int(code)}): {exc}"


RETRY_DELAY_CAP_S = 120.0


def release_with_retries(
    run: Callable[[], TrainingOutcome], retries: int, delay_s: float, log: Callable[[str], None]
) -> TrainingOutcome:
    """Run a release, again after a registry or store failure (exit 3), at most `retries` more
    times with doubling waits; every other failure is final at once.

    The training Job retries here, inside its pod, rather than by re-creating pods: the Pulumi
    Kubernetes provider reports a failed Job at once only when it failed by its backoff limit
    or deadline, so the Job fails on its first failed pod (backoffLimit 0).
    """
    for attempt in range(retries + 1):
        try:
            return run()
        except Exception as exc:
            if exit_code_for(exc) is not ExitCode.REGISTRY or attempt == retries:
                raise
            wait = min(delay_s * 2**attempt, RETRY_DELAY_CAP_S)
            log(f"attempt {attempt + 1} of {retries + 1} failed ({exc}); retrying in {wait:.0f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _read_expected(path: Path) -> ReleaseInputs:
    from model.spec import SpecError

    try:
        return ReleaseInputs.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"expected release file {path} is unreadable: {exc}") from exc


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    spec: Annotated[Path, typer.Option(help="The training spec (YAML or JSON).")],
    expected: Annotated[
        Path | None,
        typer.Option(help="The release inputs the Pulumi program planned (JSON); a mismatch exits 4."),
    ] = None,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote", help="Move the champion alias here (default: the spec's gates.promote)."
        ),
    ] = None,
    git_commit: Annotated[str | None, typer.Option(envvar="MLOPS_GIT_COMMIT", help="Lineage only.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_URI")] = None,
    artifact_root: Annotated[str | None, typer.Option(envvar="MLOPS_ARTIFACT_ROOT")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(envvar="MLFLOW_S3_ENDPOINT_URL")] = None,
    workdir: Annotated[Path, typer.Option(help="Where the embedded registry lives (.mlops/).")] = Path("."),
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")] = False,
    retries: Annotated[
        int, typer.Option(min=0, max=10, help="Retries after a registry or store failure (exit 3).")
    ] = 0,
    retry_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before the first retry; doubles each time, at most 120.")
    ] = 10.0,
) -> None:
    """Train, gate and register the release a spec file describes (the training Job's command)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    try:
        options = ReleaseOptions(
            expected=_read_expected(expected) if expected else None,
            promote=promote,
            git_commit=git_commit or None,
        )
        registry = RegistrySettings(
            tracking_uri=tracking_uri, artifact_root=artifact_root, s3_endpoint_url=s3_endpoint_url
        )
        training = load_spec_file(spec)
        # MLflow prints run links on stdout: keep stdout for the JSON outcome alone.
        with contextlib.redirect_stdout(sys.stderr):
            outcome = release_with_retries(
                lambda: train_release(training, registry, workdir, console.print, options),
                retries,
                retry_delay,
                lambda line: console.print(line, style="yellow", markup=False, soft_wrap=True),
            )
    except Exception as exc:
        code, line = describe_failure(exc)
        if code is ExitCode.CRASHED:
            console.print_exception()
        console.print(line, style="red", markup=False, soft_wrap=True)
        raise typer.Exit(int(code)) from None
    if json_out:
        sys.stdout.write(json.dumps(outcome.as_dict(), sort_keys=True) + "\n")


if __name__ == "__main__":
    app()
