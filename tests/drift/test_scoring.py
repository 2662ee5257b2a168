"""model/drift.py: profiles, PSI and KS against scipy and hand computation, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from model.drift import (
    MAX_QUANTILES,
    PROFILE_VERSION,
    PSI_EPSILON,
    SORT_FROM_ROWS,
    DriftError,
    Grid,
    ProfileError,
    ReferenceProfile,
    build_profile,
    read_profile,
    score,
)


def normal_frame(rows: int, columns: int, seed: int, shift: dict[int, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, columns))
    for j, by in (shift or {}).items():
        values[:, j] += by
    return pd.DataFrame(values, columns=[f"f{i}" for i in range(columns)])


def one_feature_profile(values: np.ndarray, bins: int = 10) -> ReferenceProfile:
    return build_profile(pd.DataFrame({"a": values}), np.zeros(len(values)), classification=True, bins=bins)


def samples(kind: str, rng: np.random.Generator, rows: int) -> np.ndarray:
    if kind == "continuous":
        return rng.normal(size=rows)
    if kind == "integers":  # many ties, in the reference and in the current data
        return rng.integers(0, 6, size=rows).astype(float)
    return np.round(rng.exponential(size=rows), 1)  # ties and a long tail


@pytest.mark.parametrize("kind", ["continuous", "integers", "rounded"])
@pytest.mark.parametrize("train_rows", [40, 700, MAX_QUANTILES])
def test_ks_equals_scipy_when_the_profile_holds_every_training_value(kind: str, train_rows: int) -> None:
    rng = np.random.default_rng(train_rows)
    train = samples(kind, rng, train_rows)
    feature = one_feature_profile(train).features[0]
    assert feature.quantiles_complete and feature.ks_error_bound == 0.0
    for size in (1, 17, 300, SORT_FROM_ROWS + 5):  # both counting paths
        current = np.concatenate([rng.choice(train, size // 2), samples(kind, rng, size - size // 2) + 0.3])
        ks = score(one_feature_profile(train), current.reshape(-1, 1)).features[0].ks
        assert ks == pytest.approx(ks_2samp(train, current).statistic, abs=1e-12)


@pytest.mark.parametrize("kind", ["continuous", "integers", "rounded"])
def test_ks_on_a_quantile_grid_is_within_the_documented_bound(kind: str) -> None:
    rng = np.random.default_rng(5)
    train = samples(kind, rng, 20_000)
    profile = one_feature_profile(train)
    feature = profile.features[0]
    assert not feature.quantiles_complete and len(feature.quantiles or []) == MAX_QUANTILES
    bound = feature.ks_error_bound
    assert bound is not None and bound == pytest.approx(1 / (MAX_QUANTILES - 1) + 1 / 20_000)
    for shift in (0.0, 0.05, 0.5):
        current = samples(kind, rng, 3000) + shift
        ks = score(profile, current.reshape(-1, 1)).features[0].ks
        assert ks is not None
        assert abs(ks - ks_2samp(train, current).statistic) <= bound + 1e-12


def test_psi_equals_the_hand_computed_value() -> None:
    # Training 1..10 in 2 bins: the median 5.5 splits them, 5 rows (50%) on each side.
    profile = one_feature_profile(np.arange(1.0, 11.0), bins=2)
    assert profile.features[0].edges == [5.5] and profile.features[0].frequencies == [0.5, 0.5]
    current = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0]])  # 5/8 and 3/8
    expected = (0.625 - 0.5) * math.log(0.625 / 0.5) + (0.375 - 0.5) * math.log(0.375 / 0.5)
    assert score(profile, current).features[0].psi == pytest.approx(expected, abs=1e-15)
    # An empty bin counts as PSI_EPSILON instead of making the logarithm infinite.
    everything_low = np.array([[1.0], [2.0]])
    empty = (1 - 0.5) * math.log(1 / 0.5) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    assert score(profile, everything_low).features[0].psi == pytest.approx(empty, abs=1e-12)


def test_the_training_data_itself_shows_no_drift() -> None:
    train = normal_frame(5000, 6, seed=1)
    profile = build_profile(train, np.zeros(5000), classification=True)
    report = score(profile, train, np.zeros(5000))
    assert not report.drifted and report.drifted_features == []
    for feature, drift in zip(profile.features, report.features, strict=True):
        assert drift.psi == pytest.approx(0.0, abs=1e-12)
        assert drift.ks is not None and drift.ks <= (feature.ks_error_bound or 0.0)
    assert report.prediction is not None and report.prediction.psi == 0.0


def test_a_one_std_shift_flags_exactly_the_shifted_features() -> None:
    profile = build_profile(normal_frame(5000, 8, seed=2), np.zeros(5000), classification=True)
    current = normal_frame(4000, 8, seed=3, shift={1: 1.0, 4: 1.0, 6: 1.0})
    report = score(profile, current)
    assert report.drifted and report.drifted_features == ["f1", "f4", "f6"]
    for drift in report.features:
        if report.is_drifted(drift):
            assert drift.psi > 0.2 and drift.ks is not None and drift.ks > 0.3
        else:
            assert drift.psi < 0.05 and drift.ks is not None and drift.ks < 0.05


def test_thresholds_are_overridable() -> None:
    profile = build_profile(normal_frame(5000, 3, seed=2), np.zeros(5000), classification=True)
    current = normal_frame(2000, 3, seed=3, shift={0: 1.0})
    assert score(profile, current).drifted_features == ["f0"]
    assert not score(profile, current, psi_threshold=10.0, ks_threshold=1.0).drifted
    assert score(profile, normal_frame(2000, 3, seed=4), psi_threshold=0.0).drifted
    # Drift is a statistic strictly above its threshold: at the value itself it is not.
    f0 = score(profile, current).features[0]
    assert f0.ks is not None
    assert score(profile, current, psi_threshold=f0.psi, ks_threshold=1.0).drifted_features == []
    assert score(profile, current, psi_threshold=10.0, ks_threshold=f0.ks).drifted_features == []
    assert score(profile, current, psi_threshold=10.0, ks_threshold=f0.ks * 0.999).drifted_features == ["f0"]


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
@pytest.mark.parametrize("which", ["psi", "ks"])
def test_thresholds_that_judge_nothing_are_refused(which: str, bad: float) -> None:
    profile = build_profile(normal_frame(100, 2, seed=2), np.zeros(100), classification=True)
    psi, ks = (bad, 0.1) if which == "psi" else (0.2, bad)
    with pytest.raises(DriftError, match=rf"thresholds must be >= 0 and finite \(got PSI {psi}, KS {ks}\)"):
        score(profile, normal_frame(50, 2, seed=3), psi_threshold=psi, ks_threshold=ks)


def test_scores_do_not_depend_on_row_order() -> None:
    train = normal_frame(3000, 4, seed=6)
    profile = build_profile(train, np.arange(3000) % 3, classification=True)
    current = normal_frame(SORT_FROM_ROWS + 100, 4, seed=7, shift={2: 0.4})
    predictions = np.arange(len(current)) % 2
    order = np.random.default_rng(8).permutation(len(current))
    a = score(profile, current, predictions)
    b = score(profile, current.iloc[order], predictions[order])
    assert a == b
    # Columns in another order are matched by name.
    assert score(profile, current[current.columns[::-1]], predictions) == a


@pytest.mark.parametrize("rows", [1, 50, SORT_FROM_ROWS, 3 * SORT_FROM_ROWS])
def test_counting_row_by_row_and_by_sorting_agree(rows: int) -> None:
    rng = np.random.default_rng(rows)
    train = rng.integers(0, 30, size=2000).astype(float)
    grid = Grid.of(one_feature_profile(train).features[0])
    current = np.concatenate([rng.integers(-2, 33, size=rows).astype(float), rng.normal(10, 5, size=rows)])
    assert np.array_equal(grid.count(current), np.bincount(grid.locate(current), minlength=grid.codes))


def test_prediction_drift_classification_and_regression() -> None:
    train = normal_frame(2000, 2, seed=9)
    labels = np.where(train["f0"] > 0, "yes", "no")
    classifier = build_profile(train, labels, classification=True)
    assert score(classifier, train, labels).prediction.psi == 0.0  # type: ignore[union-attr]
    unseen = score(classifier, train, np.full(2000, "maybe"))
    assert unseen.prediction is not None and unseen.prediction.ks is None
    assert unseen.is_drifted(unseen.prediction) and unseen.drifted and unseen.drifted_features == []
    values = train["f0"].to_numpy() * 3
    regressor = build_profile(train, values, classification=False)
    same = score(regressor, train, values)
    assert same.prediction is not None and same.prediction.ks is not None and not same.drifted
    moved = score(regressor, train, values + 3)
    assert moved.prediction is not None and moved.prediction.ks is not None and moved.prediction.ks > 0.3
    assert moved.is_drifted(moved.prediction) and moved.distributions == [*moved.features, moved.prediction]


def test_a_profile_survives_json_and_reads_back(tmp_path: Path) -> None:
    profile = build_profile(normal_frame(1500, 3, seed=10), np.arange(1500) % 2, classification=True)
    path = tmp_path / "reference_profile.json"
    path.write_text(json.dumps(profile.to_dict(), indent=1))
    again = read_profile(path)
    assert again == profile and again.version == PROFILE_VERSION == 2


def _as_version_1(profile: ReferenceProfile) -> dict[str, Any]:
    """What training wrote before version 2: no counts, no quantiles."""
    raw = profile.to_dict()
    raw["version"] = 1
    for feature in [*raw["features"], *([raw["prediction"]] if raw["prediction"] else [])]:
        for key in ("count", "quantiles", "quantiles_complete"):
            del feature[key]
    return raw


def test_version_1_profiles_load_and_report_ks_as_unavailable(tmp_path: Path) -> None:
    train = normal_frame(3000, 3, seed=12)
    profile = build_profile(train, train["f0"].to_numpy(), classification=False)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(_as_version_1(profile)))
    old = read_profile(path)
    assert old.version == 1 and all(f.quantiles is None and not f.ks_available for f in old.features)
    current = normal_frame(2000, 3, seed=13, shift={1: 1.0})
    old_report = score(old, current, current["f0"].to_numpy())
    new_report = score(profile, current, current["f0"].to_numpy())
    assert [f.ks for f in old_report.features] == [None, None, None]
    assert old_report.prediction is not None and old_report.prediction.ks is None
    assert [f.psi for f in old_report.features] == pytest.approx([f.psi for f in new_report.features])
    assert old_report.drifted_features == ["f1"]
    assert all(f.ks_error_bound is None for f in old.features)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame({"f0": [1.0], "f1": [2.0]}), "missing f2"),
        (pd.DataFrame({"f0": [1.0], "f1": [2.0], "f2": [3.0], "id": [4.0]}), "not in the release: id"),
        (pd.DataFrame({"f0": [1.0], "f1": ["x"], "f2": [3.0]}), "column 'f1' is not numeric"),
        (pd.DataFrame({"f0": [1.0, 2.0], "f1": [2.0, None], "f2": [3.0, 3.0]}), "'f1' has 1 missing"),
        (np.array([[1.0, 2.0]]), "expected rows of 3 features (f0, f1, f2), got shape (1, 2)"),
        (np.array([[1.0, np.inf, 0.0]]), "'f1' has 1 missing or non-finite value(s), the first in row 0"),
        (pd.DataFrame({"f0": [], "f1": [], "f2": []}, dtype=float), "no rows"),
    ],
)
def test_bad_data_is_refused_with_what_is_wrong(data: Any, message: str) -> None:
    profile = build_profile(normal_frame(100, 3, seed=14), np.zeros(100), classification=True)
    with pytest.raises(DriftError) as info:
        score(profile, data)
    assert message in str(info.value)


def test_predictions_must_match_the_rows() -> None:
    profile = build_profile(normal_frame(100, 1, seed=15), np.zeros(100), classification=True)
    with pytest.raises(DriftError, match="3 predictions for 100 rows"):
        score(profile, normal_frame(100, 1, seed=16), np.zeros(3))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not readable JSON"),
        ('{"version": 7, "rows": 1, "features": []}', "version 7 is not supported"),
        ('{"version": 2, "rows": 1}', "malformed"),
        (
            '{"version": 2, "rows": 1, "prediction": null, "class_frequencies": null, "features": '
            '[{"name": "a", "edges": [1.0], "frequencies": [1.0], "mean": 0, "std": 1}]}',
            "1 edges need 2 shares",
        ),
    ],
)
def test_unreadable_profiles_are_refused_with_the_reason(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "reference_profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert message in str(info.value) and str(path) in str(info.value)
