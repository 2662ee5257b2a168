"""Lifecycle overhead: what logging, artifact upload and registration cost next to a bare fit.

Runs both in this process, on the same data, alternating, and prints ratios (never absolute
targets): `python benchmarks/lifecycle_overhead.py [--repeats 3]`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import typer

from model.data import load_dataset, split_dataset
from model.estimators import build_pipeline
from model.spec import GateSpec, RegistrySettings, TrainingSpec
from model.train import train_release

CASES = {
    "random_forest(300 trees)": ("random_forest", {"n_estimators": 300}),
    "logistic_regression": ("logistic_regression", {"max_iter": 2000}),
    "hist_gradient_boosting": ("hist_gradient_boosting", {"max_iter": 200}),
}


def bare_fit(spec: TrainingSpec) -> float:
    started = time.perf_counter()
    split = split_dataset(load_dataset(spec.dataset), spec.target, spec.test_size, spec.seed, stratify=True)
    build_pipeline(spec.estimator, spec.task, spec.params, spec.seed).fit(split.X_train, split.y_train)
    return time.perf_counter() - started


def full_release(spec: TrainingSpec, registry: RegistrySettings, workdir: Path) -> float:
    started = time.perf_counter()
    outcome = train_release(spec, registry, workdir, log=lambda _: None)
    assert outcome.status == "registered"
    return time.perf_counter() - started


def main(repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = RegistrySettings()
        # Warm the embedded registry once (schema creation is a one-off per machine).
        warm = TrainingSpec(
            model_name="warmup",
            dataset="sklearn:breast_cancer",
            target="target",
            task="classification",
            estimator="logistic_regression",
        )
        cold = full_release(warm, registry, workdir)
        print(f"first release into a new embedded registry (creates the schema): {cold:.2f}s\n")
        print(f"{'estimator':28} {'fit s':>8} {'release s':>10} {'overhead s':>11} {'overhead/fit':>13}")
        for label, (estimator, params) in CASES.items():
            fits, releases = [], []
            for seed in range(repeats):
                spec = TrainingSpec(
                    model_name=f"bench-{estimator.replace('_', '-')}",
                    dataset="sklearn:breast_cancer",
                    target="target",
                    task="classification",
                    estimator=estimator,
                    params=params,
                    seed=seed,
                    gates=GateSpec(promote=False),
                )
                fits.append(bare_fit(spec))
                releases.append(full_release(spec, registry, workdir))
            fit, release = statistics.median(fits), statistics.median(releases)
            overhead = release - fit
            print(f"{label:28} {fit:8.3f} {release:10.3f} {overhead:11.3f} {overhead / fit:12.1f}x")


if __name__ == "__main__":
    typer.run(main)
