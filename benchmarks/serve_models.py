"""Train the benchmark's two releases into a scratch registry.

The logistic regression sees 20 features from `make_classification`, the random forest the
bundled breast-cancer data with 100 trees: the two models the issue measured `mlflow models serve` on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_NAMES", "BenchModels", "train_bench_models"]

MODEL_NAMES = {"logistic_regression": "bench-lr", "random_forest": "bench-rf"}
"""Registered model name per BenchModels field (also the release folders' parent names)."""


@dataclass(frozen=True)
class BenchModels:
    logistic_regression: Path
    """Release folder (release.json, reference_profile.json, model/)."""
    random_forest: Path


def train_bench_models(workdir: Path) -> BenchModels:
    """Train and register both releases under `workdir`; returns their release folders."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from model.spec import RegistrySettings, TrainingSpec
    from model.train import train_release

    workdir.mkdir(parents=True, exist_ok=True)
    X, y = make_classification(n_samples=2000, n_features=20, n_informative=10, n_redundant=4, random_state=7)
    frame = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(20)])
    frame["label"] = y
    csv = workdir / "classification20.csv"
    frame.to_csv(csv, index=False)
    registry = RegistrySettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", artifact_root=str(workdir / "artifacts")
    )
    specs = {
        "logistic_regression": TrainingSpec(
            model_name=MODEL_NAMES["logistic_regression"],
            dataset=str(csv),
            target="label",
            task="classification",
            estimator="logistic_regression",
            params={"max_iter": 500},
        ),
        "random_forest": TrainingSpec(
            model_name=MODEL_NAMES["random_forest"],
            dataset="sklearn:breast_cancer",
            target="target",
            task="classification",
            estimator="random_forest",
            params={"n_estimators": 100},
        ),
    }
    folders = {}
    for key, spec in specs.items():
        outcome = train_release(spec, registry, workdir, log=lambda _m: None)
        folders[key] = Path(outcome.model_uri).parent
    return BenchModels(**folders)


if __name__ == "__main__":
    import sys

    print(train_bench_models(Path(sys.argv[1])))
