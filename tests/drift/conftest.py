"""Two small real releases to score drift against: a classifier and a regressor.

The classifier trains on 2,250 rows (more than MAX_QUANTILES: its profile holds a quantile
grid), the regressor on diabetes' 331 (its profile holds every training value).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import pytest

from model.artifact import PROFILE_FILE
from model.drift import ReferenceProfile, read_profile
from tests.server.conftest import train_releases


@dataclass(frozen=True)
class TrainedRelease:
    folder: Path
    data: Path | str
    """The dataset URI it was trained on (target column included)."""
    target: str
    features: pd.DataFrame
    """The dataset's feature columns, in the signature's order."""

    @cached_property
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

    X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, random_state=11)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    frame["label"] = y
    csv = workdir / "classification8.csv"
    frame.to_csv(csv, index=False)
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
        "classifier": frame.drop(columns="label"),
        "regressor": load_diabetes(as_frame=True).frame.drop(columns="target"),
    }
    return {
        key: TrainedRelease(folder, specs[key].dataset, specs[key].target, features[key])
        for key, folder in train_releases(specs, workdir).items()
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedRelease]:
    return _train(tmp_path_factory.mktemp("drift-releases"))


@pytest.fixture(scope="session")
def classifier(trained: dict[str, TrainedRelease]) -> TrainedRelease:
    return trained["classifier"]


@pytest.fixture(scope="session")
def regressor(trained: dict[str, TrainedRelease]) -> TrainedRelease:
    return trained["regressor"]
