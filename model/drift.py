"""Reference profiles of training data, and drift scores of new data against them.

Every release folder holds `reference_profile.json`: per feature (and, for regression, for
the predictions) 10 quantile bins with the training share of each (for PSI) and, since
version 2, `quantiles`, sorted training values (for KS): all of them when the training set
has at most MAX_QUANTILES finite values, else the values at MAX_QUANTILES evenly spaced
probabilities. Classification profiles keep the share of each predicted class instead.

PSI = sum over bins of (cur - ref) * ln(cur / ref). A share below PSI_EPSILON counts as
PSI_EPSILON, so an empty bin adds a large but finite term, and a bin empty on both sides
adds nothing.

KS = max over x of |F_ref(x) - F_cur(x)|, the two-sample Kolmogorov-Smirnov statistic. With
every training value kept it is exactly `scipy.stats.ks_2samp(train, current).statistic`.
With a grid of m quantiles of n training values, F_ref(x) is read as the probability of the
largest grid point <= x, which is within 1/(m-1) + 1/n of the training ECDF F, so the
statistic is within that bound (`FeatureProfile.ks_error_bound`) of the exact one. Why: the
grid point q_k at probability p_k = k/(m-1) is interpolated between the sorted training values
at positions floor and ceil of p_k(n-1), so F(q_k) >= p_k - 1/n and F just below q_(k+1) is
<= p_(k+1) + 1/n; for x in [q_k, q_(k+1)) the profile says p_k and F(x) lies between the two.

Both scores come from one pass per column: each value is located once among the profile's
points (`Grid.locate`, a `searchsorted`), the locations are counted (`bincount`), and PSI and
KS are read from the counts. A `Scorer` holds a profile's grids and prediction bins, built
once; `score` uses one, and so does the model server for its sliding window of recent rows
(model/server/drift_monitor.py), so its figures are the ones `score` gives for the same rows.

Only numpy is imported at run time: the model server imports this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_KS_THRESHOLD",
    "DEFAULT_PSI_THRESHOLD",
    "MAX_QUANTILES",
    "PROFILE_VERSION",
    "PSI_EPSILON",
    "ClassBins",
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "FeatureProfile",
    "Grid",
    "ProfileError",
    "ReferenceProfile",
    "Scorer",
    "build_profile",
    "check_thresholds",
    "feature_matrix",
    "histogram",
    "psi",
    "read_profile",
    "sample_rows",
    "score",
]

PROFILE_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
SORT_FROM_ROWS = 4096
"""From this many rows on, `Grid.count` sorts instead of locating each row."""
MAX_QUANTILES = 1001
"""Most KS points kept per feature: every training value up to this many, else a quantile grid."""
PSI_EPSILON = 1e-4
"""Smallest bin share PSI uses: keeps ln(cur / ref) finite for empty bins."""
DEFAULT_PSI_THRESHOLD = 0.2
"""PSI above 0.2 is the usual reading of a significant shift (0.1-0.2: moderate)."""
DEFAULT_KS_THRESHOLD = 0.1
"""KS above 0.1: a tenth of the rows moved across some value relative to training."""


class DriftError(ValueError):
    """Data that cannot be scored: wrong columns, non-numeric or missing values, no rows."""


class ProfileError(DriftError):
    """A reference profile that is missing, unreadable or of an unsupported version."""


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    edges: list[float]
    """Interior bin edges from training quantiles; bins are (-inf, e0], (e0, e1], ... (en, inf)."""
    frequencies: list[float]
    """Share of training rows per bin: len(edges) + 1 values summing to 1."""
    mean: float
    std: float
    count: int | None = None
    """Finite training values the profile was built from (None in version 1 profiles)."""
    quantiles: list[float] | None = None
    """Sorted training values for KS (None in version 1 profiles: KS unavailable)."""
    quantiles_complete: bool = False
    """True: `quantiles` holds every training value (exact KS); False: a quantile grid."""

    @property
    def ks_available(self) -> bool:
        return bool(self.quantiles) and bool(self.count)

    @property
    def ks_error_bound(self) -> float | None:
        """Largest difference between this profile's KS and the exact two-sample one."""
        if not self.ks_available:
            return None
        if self.quantiles_complete:
            return 0.0
        assert self.quantiles is not None and self.count
        return 1 / (len(self.quantiles) - 1) + 1 / self.count

    def check(self) -> None:
        if len(self.frequencies) != len(self.edges) + 1:
            raise ProfileError(
                f"feature {self.name!r}: {len(self.edges)} edges need {len(self.edges) + 1} shares"
            )
        for label, values in (("edges", self.edges), ("quantiles", self.quantiles or [])):
            if np.any(np.diff(np.asarray(values, dtype=np.float64)) < 0):
                raise ProfileError(f"feature {self.name!r}: {label} are not sorted")


@dataclass(frozen=True)
class ReferenceProfile:
    version: int
    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile | None
    """Regression: the prediction histogram. Classification: None, see class_frequencies."""
    class_frequencies: dict[str, float] | None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        version = raw.get("version") if isinstance(raw, dict) else None
        if version not in SUPPORTED_VERSIONS:
            raise ProfileError(
                f"reference profile version {version!r} is not supported (this code reads "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        try:
            pred = raw.get("prediction")
            profile = cls(
                version=int(raw["version"]),
                rows=int(raw["rows"]),
                features=[FeatureProfile(**f) for f in raw["features"]],
                prediction=FeatureProfile(**pred) if pred else None,
                class_frequencies=raw.get("class_frequencies"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"reference profile is malformed: {exc}") from exc
        for feature in [*profile.features, *([profile.prediction] if profile.prediction else [])]:
            feature.check()
        return profile


def read_profile(path: Path) -> ReferenceProfile:
    """The profile at `path` (a release's reference_profile.json), or a ProfileError saying why not."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path} does not exist: the release has no reference profile") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path} is not readable JSON: {exc}") from exc
    try:
        return ReferenceProfile.from_dict(raw)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None


# -- building ---------------------------------------------------------------------------


def histogram(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of values per bin for the interior `edges` (right-closed bins)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _profile(name: str, values: np.ndarray, bins: int) -> FeatureProfile:
    finite = np.sort(values[np.isfinite(values)])
    quantiles = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]) if finite.size else np.array([])
    edges = sorted({float(q) for q in quantiles})
    complete = finite.size <= MAX_QUANTILES
    grid = finite if complete else np.quantile(finite, np.linspace(0, 1, MAX_QUANTILES))
    return FeatureProfile(
        name=name,
        edges=edges,
        frequencies=histogram(finite, edges),
        mean=float(finite.mean()) if finite.size else float("nan"),
        std=float(finite.std()) if finite.size else float("nan"),
        count=int(finite.size),
        quantiles=[float(v) for v in grid],
        quantiles_complete=complete,
    )


def build_profile(
    X: pd.DataFrame, predictions: np.ndarray, classification: bool, bins: int = 10
) -> ReferenceProfile:
    features = [_profile(str(c), X[c].to_numpy(dtype=float), bins) for c in X.columns]
    if classification:
        labels, counts = np.unique(predictions, return_counts=True)
        shares = {
            str(label): float(count / counts.sum()) for label, count in zip(labels, counts, strict=True)
        }
        return ReferenceProfile(PROFILE_VERSION, len(X), features, None, shares)
    prediction = _profile("prediction", np.asarray(predictions, dtype=float), bins)
    return ReferenceProfile(PROFILE_VERSION, len(X), features, prediction, None)


def sample_rows(
    profile: ReferenceProfile, integer_columns: frozenset[str], rows: int = 2000, seed: int = 0
) -> np.ndarray:
    """Synthetic rows drawn from the per-feature histograms, in the profile's feature order.

    They exercise every bin (and a spread beyond the outer edges) without copying training
    rows into the model artifact.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((rows, len(profile.features)))
    for j, feature in enumerate(profile.features):
        edges = np.asarray(feature.edges, dtype=np.float64)
        spread = feature.std if np.isfinite(feature.std) and feature.std > 0 else 1.0
        if edges.size == 0:
            out[:, j] = feature.mean if np.isfinite(feature.mean) else 0.0
            continue
        lows = np.concatenate([[edges[0] - spread], edges])
        highs = np.concatenate([edges, [edges[-1] + spread]])
        freq = np.asarray(feature.frequencies, dtype=np.float64)
        freq = freq / freq.sum() if freq.sum() > 0 else np.full(freq.size, 1 / freq.size)
        bins = rng.choice(freq.size, size=rows, p=freq)
        out[:, j] = rng.uniform(lows[bins], highs[bins])
        if feature.name in integer_columns:
            out[:, j] = np.round(out[:, j])
    return out


# -- scoring ----------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two share vectors over the same bins (see the module doc)."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    cur = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


@dataclass(frozen=True, eq=False)
class Grid:
    """One feature's profile as arrays: where a value lies among the profile's points, and
    what that location means for PSI (its bin) and KS (the reference ECDF there).

    A location code is 2 * (1 + number of points <= x) + (x equals a point): with the points
    being the KS quantiles and the PSI edges together, the code alone gives both statistics.
    """

    name: str
    points: np.ndarray
    """Strictly increasing, led by -inf: the quantiles and the PSI edges."""
    bin_of_code: np.ndarray
    """PSI bin of each location code."""
    reference: np.ndarray
    """Training share per PSI bin."""
    cdf: np.ndarray | None
    """Reference ECDF at each point after -inf; None when the profile has no quantiles."""

    @classmethod
    def of(cls, feature: FeatureProfile) -> Grid:
        edges = np.asarray(feature.edges, dtype=np.float64)
        quantiles = np.asarray(feature.quantiles or [], dtype=np.float64)
        points = np.unique(np.concatenate([quantiles, edges]))
        below = np.searchsorted(points, edges)  # edges are points: their positions
        codes = np.arange(2 * (len(points) + 2))
        position = codes // 2 - 1 - codes % 2  # how many points lie strictly below the value
        bin_of_code = np.searchsorted(below, position, side="left").astype(np.intp)
        cdf = None
        if feature.ks_available:
            at_or_below = np.searchsorted(quantiles, points, side="right")
            if feature.quantiles_complete:
                cdf = at_or_below / len(quantiles)
            else:
                cdf = np.maximum(at_or_below - 1, 0) / (len(quantiles) - 1)
        return cls(
            feature.name,
            np.concatenate([[-np.inf], points]),
            bin_of_code,
            np.asarray(feature.frequencies, dtype=np.float64),
            cdf,
        )

    @property
    def codes(self) -> int:
        """How many location codes there are (the length of a counts vector)."""
        return 2 * (len(self.points) + 1)

    def locate(self, values: np.ndarray) -> np.ndarray:
        """Location codes of finite `values` (one searchsorted pass, one comparison)."""
        at = np.searchsorted(self.points, values, side="right")
        return 2 * at + (self.points[at - 1] == values)

    def count(self, values: np.ndarray) -> np.ndarray:
        """Rows per location code: what `locate` and a bincount give, faster for many rows.

        Many rows are sorted once and the points looked up in them (numpy's vectorised sort
        beats a searchsorted of unsorted values into the points several times over).
        """
        if len(values) < SORT_FROM_ROWS:
            return np.bincount(self.locate(values), minlength=self.codes)
        ordered = np.sort(values)
        points = self.points[1:]
        at_or_below = np.searchsorted(ordered, points, side="right")
        below = np.searchsorted(ordered, points, side="left")
        counts = np.zeros(self.codes, dtype=np.int64)
        counts[5::2] = at_or_below - below  # equal to a point
        # Between two points (or beyond the last): rows < the next point, less rows <= this one.
        counts[2::2] = np.concatenate([below, [len(values)]]) - np.concatenate([[0], at_or_below])
        return counts

    def bin_counts(self, counts: np.ndarray) -> np.ndarray:
        """Rows per PSI bin, from counts per location code."""
        return np.bincount(self.bin_of_code, weights=counts, minlength=len(self.reference))

    def psi(self, counts: np.ndarray) -> float:
        return psi(self.reference, _shares(self.bin_counts(counts)))

    def ks(self, counts: np.ndarray) -> float | None:
        """KS of the rows counted against the reference ECDF (None: the profile has no quantiles).

        Between two points the reference ECDF is flat, so the largest gap on each stretch is at
        its ends: at the point itself (rows <= it) or just before the next one (rows < that).
        """
        if self.cdf is None:
            return None
        total = counts.sum()
        if not total:
            return 0.0
        located = counts[2::2] + counts[3::2]  # rows by the number of points <= x
        below = np.cumsum(located)  # below[i]: rows < point i (counting after -inf); then all rows
        at = below[:-1] + counts[5::2]  # rows <= each point
        before_next = below[1:]  # rows < the next point (all rows, after the last point)
        reference = self.cdf * total
        gaps = np.concatenate([[below[0]], np.abs(reference - at), np.abs(reference - before_next)])
        return float(gaps.max() / total)


@dataclass(frozen=True, eq=False)
class ClassBins:
    """Predicted classes as PSI bins: the profile's classes in order, then one for any other."""

    labels: tuple[str, ...]
    reference: np.ndarray

    @classmethod
    def of(cls, class_frequencies: dict[str, float]) -> ClassBins:
        labels = tuple(class_frequencies)
        shares = [class_frequencies[label] for label in labels] + [0.0]
        return cls(labels, np.asarray(shares, dtype=np.float64))

    @property
    def codes(self) -> int:
        return len(self.labels) + 1

    _keys: dict[np.dtype[Any], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Per prediction dtype: the labels as values of that dtype (sorted), and their bins."""

    def locate(self, predictions: np.ndarray) -> np.ndarray:
        """Bin of each predicted label: the label whose text (as the profile stores it) it has."""
        predictions = np.asarray(predictions)
        other = len(self.labels)
        if predictions.dtype.kind not in "iufU":
            index = {label: i for i, label in enumerate(self.labels)}
            unique, inverse = np.unique(predictions, return_inverse=True)
            return np.asarray([index.get(str(u), other) for u in unique], dtype=np.intp)[inverse.reshape(-1)]
        keys, bins = self._typed_keys(predictions.dtype)
        if not len(keys):
            return np.full(len(predictions), other, dtype=np.intp)
        at = np.minimum(np.searchsorted(keys, predictions), len(keys) - 1)
        return np.where(keys[at] == predictions, bins[at], other)

    def _typed_keys(self, dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
        if dtype not in self._keys:
            typed = {}
            for i, label in enumerate(self.labels):
                try:
                    value = dtype.type(label)
                except (TypeError, ValueError, OverflowError):
                    continue
                if str(value) == label:  # the profile wrote str(prediction)
                    typed[value] = i
            keys = np.asarray(sorted(typed), dtype=dtype)
            self._keys[dtype] = (keys, np.asarray([typed[k] for k in keys], dtype=np.intp))
        return self._keys[dtype]

    def count(self, predictions: np.ndarray) -> np.ndarray:
        return np.bincount(self.locate(predictions), minlength=self.codes)

    def psi(self, counts: np.ndarray) -> float:
        return psi(self.reference, _shares(counts))


@dataclass(frozen=True)
class FeatureDrift:
    """PSI and KS of one distribution (a feature or the predictions) against its profile."""

    name: str
    psi: float
    ks: float | None
    """None: the profile has no quantiles (version 1) or the predictions are classes."""


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    """None when no predictions were scored (or the profile has none)."""
    rows: int
    psi_threshold: float
    ks_threshold: float

    @property
    def distributions(self) -> list[FeatureDrift]:
        """The features in the profile's order, then the predictions when they were scored."""
        return [*self.features, *([self.prediction] if self.prediction is not None else [])]

    def is_drifted(self, distribution: FeatureDrift) -> bool:
        """PSI above its threshold, or KS above its threshold."""
        ks = distribution.ks
        return distribution.psi > self.psi_threshold or (ks is not None and ks > self.ks_threshold)

    @property
    def drifted(self) -> bool:
        """Any feature, or the predictions, drifted."""
        return any(self.is_drifted(d) for d in self.distributions)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if self.is_drifted(f)]


def check_thresholds(psi_threshold: float, ks_threshold: float) -> None:
    """Refuse thresholds no statistic can be judged by: negative, infinite or NaN (never exceeded)."""
    if not all(math.isfinite(t) and t >= 0 for t in (psi_threshold, ks_threshold)):
        raise DriftError(f"thresholds must be >= 0 and finite (got PSI {psi_threshold}, KS {ks_threshold})")


def feature_matrix(profile: ReferenceProfile, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """`X` as float64 rows x features in the profile's order, or a DriftError naming what is wrong.

    A frame must have exactly the profile's columns (any order); an array, as many columns.
    Missing or non-finite values are refused: drop or impute them before scoring.
    """
    names = profile.feature_names
    if isinstance(X, np.ndarray):
        values = np.asarray(X, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise DriftError(
                f"expected rows of {len(names)} features ({', '.join(names)}), got shape {values.shape}"
            )
    else:
        values = _frame_values(X, names)
    if len(values) == 0:
        raise DriftError("the data has no rows")
    _refuse_non_finite(values, names)
    return values


def _frame_values(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    columns = [str(c) for c in frame.columns]
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"not in the release: {', '.join(extra)}"] if extra else []
        raise DriftError(f"the data's columns differ from the release's features: {'; '.join(parts)}")
    position = {name: i for i, name in enumerate(columns)}
    values = np.empty((len(frame), len(names)))
    for j, name in enumerate(names):
        try:
            values[:, j] = frame.iloc[:, position[name]].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise DriftError(f"column {name!r} is not numeric") from None
    return values


def _refuse_non_finite(values: np.ndarray, names: Sequence[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.argmax(bad.any(axis=0)))
        row = int(np.argmax(bad[:, j]))
        raise DriftError(
            f"column {names[j]!r} has {int(bad[:, j].sum())} missing or non-finite value(s), the first "
            f"in row {row}: drop or impute them before scoring drift"
        )


@dataclass(frozen=True, eq=False)
class Scorer:
    """A profile's grids and prediction bins, built once, to score any number of row sets.

    `score` uses one for a dataset, the model server one for its window of recent rows.
    """

    profile: ReferenceProfile
    grids: tuple[Grid, ...]
    """Per feature, in the profile's order."""
    prediction: Grid | ClassBins | None
    """Classes (classification), a grid (regression), or None: the profile has no predictions."""

    @classmethod
    def of(cls, profile: ReferenceProfile) -> Scorer:
        prediction: Grid | ClassBins | None = None
        if profile.class_frequencies is not None:
            prediction = ClassBins.of(profile.class_frequencies)
        elif profile.prediction is not None:
            prediction = Grid.of(profile.prediction)
        return cls(profile, tuple(Grid.of(f) for f in profile.features), prediction)

    def features(self, columns: Iterable[np.ndarray]) -> list[FeatureDrift]:
        """PSI and KS of each feature's values (`columns` in the profile's order)."""
        out = []
        for grid, column in zip(self.grids, columns, strict=True):
            counts = grid.count(column)
            out.append(FeatureDrift(grid.name, grid.psi(counts), grid.ks(counts)))
        return out

    def prediction_drift(self, counts: np.ndarray) -> FeatureDrift:
        """PSI (and KS for regression) of predictions counted per code of `self.prediction`."""
        bins = self.prediction
        if bins is None:
            raise DriftError("the reference profile has no prediction distribution")
        ks = bins.ks(counts) if isinstance(bins, Grid) else None
        return FeatureDrift("prediction", bins.psi(counts), ks)

    def prediction_shares(self, counts: np.ndarray) -> dict[str, float]:
        """Share of the counted predictions per class label (classification) or per PSI bin index."""
        bins, total = self.prediction, counts.sum()
        if bins is None or not total:
            return {}
        if isinstance(bins, ClassBins):
            return {label: float(counts[i] / total) for i, label in enumerate(bins.labels)}
        return {str(i): float(n / total) for i, n in enumerate(bins.bin_counts(counts))}

    def score(
        self,
        X: pd.DataFrame | np.ndarray,
        predictions: np.ndarray | None = None,
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        ks_threshold: float = DEFAULT_KS_THRESHOLD,
    ) -> DriftReport:
        """PSI and KS of `X` (and PSI, plus KS for regression, of `predictions`), judged by the thresholds."""
        check_thresholds(psi_threshold, ks_threshold)
        values = feature_matrix(self.profile, X)
        features = self.features(np.ascontiguousarray(values[:, j]) for j in range(values.shape[1]))
        prediction = None
        if predictions is not None:
            prediction = self._score_predictions(np.asarray(predictions), len(values))
        return DriftReport(features, prediction, len(values), psi_threshold, ks_threshold)

    def _score_predictions(self, predictions: np.ndarray, rows: int) -> FeatureDrift | None:
        if len(predictions) != rows:
            raise DriftError(f"{len(predictions)} predictions for {rows} rows")
        bins = self.prediction
        if bins is None:
            return None
        if isinstance(bins, Grid):
            predictions = predictions.astype(np.float64)
            _refuse_non_finite(predictions.reshape(-1, 1), ["prediction"])
        return self.prediction_drift(bins.count(predictions))


def score(
    profile: ReferenceProfile,
    X: pd.DataFrame | np.ndarray,
    predictions: np.ndarray | None = None,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    ks_threshold: float = DEFAULT_KS_THRESHOLD,
) -> DriftReport:
    """PSI and KS of `X` (and PSI, plus KS for regression, of `predictions`) against `profile`.

    Scoring several row sets against one profile: build a `Scorer` once and call its `score`.
    """
    return Scorer.of(profile).score(X, predictions, psi_threshold, ks_threshold)
