"""Two small real releases to score drift against: a classifier and a regressor.

The classifier trains on 2,250 rows (more than MAX_QUANTILES: its profile holds a quantile
grid), the regressor on diabetes' 331 (its profile holds every training value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from model.artifact import PROFILE_FILE
from model.drift import ReferenceProfile, read_profile
from model.spec import RegistrySettings


@dataclass(frozen=True)
class TrainedRelease:
    folder: Path
    data: Path | str
    """The dataset URI it was trained on (target column included)."""
    target: str
    features: pd.DataFrame
    """The dataset's feature columns, in the signature's order."""

    @property
    def profile(self) -> ReferenceProfile:
        return read_profile(self.folder / PROFILE_FILE)

    def shifted(self, columns: list[str]) -> pd.DataFrame:
        """The features with `columns` moved up by one training standard deviation."""
        stds = {f.name: f.std for f in self.profile.features}
        out = self.features.copy()
        for column in columns:
            out[column] = out[column] + stds[column]
        return out


def _train(workdir: Path) -> dict[str, TrainedRelease]:
    from sklearn.datasets import load_diabetes, make_classification

    from model.spec import TrainingSpec
    from model.train import train_release

    X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, random_state=11)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    frame["label"] = y
    csv = workdir / "classification8.csv"
    frame.to_csv(csv, index=False)
    registry = RegistrySettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", artifact_root=str(workdir / "artifacts")
    )
    specs = {
        "classifier": TrainingSpec(
            model_name="drift-classifier",
            dataset=str(csv),
            target="label",
            task="classification",
            estimator="logistic_regression",
            params={"max_iter": 500},
        ),
        "regressor": TrainingSpec(
            model_name="drift-regressor",
            dataset="sklearn:diabetes",
            target="target",
            task="regression",
            estimator="ridge",
        ),
    }
    features = {
        "classifier": pd.read_csv(csv).drop(columns="label"),
        "regressor": load_diabetes(as_frame=True).frame.drop(columns="target"),
    }
    trained = {}
    for key, spec in specs.items():
        outcome = train_release(spec, registry, workdir, log=lambda _m: None)
        trained[key] = TrainedRelease(
            Path(outcome.model_uri).parent, spec.dataset, spec.target, features[key]
        )
    return trained


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedRelease]:
    return _train(tmp_path_factory.mktemp("drift-releases"))


@pytest.fixture(scope="session")
def classifier(trained: dict[str, TrainedRelease]) -> TrainedRelease:
    return trained["classifier"]


@pytest.fixture(scope="session")
def regressor(trained: dict[str, TrainedRelease]) -> TrainedRelease:
    return trained["regressor"]
