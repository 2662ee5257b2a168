"""Reference profiles of training data, saved with each release for drift detection in serving."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FeatureProfile", "ReferenceProfile", "build_profile", "histogram", "sample_rows"]

PROFILE_VERSION = 1


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    edges: list[float]
    """Interior bin edges from training quantiles; bins are (-inf, e0], (e0, e1], ... (en, inf)."""
    frequencies: list[float]
    """Share of training rows per bin: len(edges) + 1 values summing to 1."""
    mean: float
    std: float


@dataclass(frozen=True)
class ReferenceProfile:
    version: int
    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile | None
    """Regression: the prediction histogram. Classification: None, see class_frequencies."""
    class_frequencies: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        pred = raw.get("prediction")
        return cls(
            version=int(raw["version"]),
            rows=int(raw["rows"]),
            features=[FeatureProfile(**f) for f in raw["features"]],
            prediction=FeatureProfile(**pred) if pred else None,
            class_frequencies=raw.get("class_frequencies"),
        )


def histogram(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of values per bin for the interior `edges` (right-closed bins)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _profile(name: str, values: np.ndarray, bins: int) -> FeatureProfile:
    finite = values[np.isfinite(values)]
    quantiles = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]) if finite.size else np.array([])
    edges = sorted({float(q) for q in quantiles})
    return FeatureProfile(
        name=name,
        edges=edges,
        frequencies=histogram(finite, edges),
        mean=float(finite.mean()) if finite.size else float("nan"),
        std=float(finite.std()) if finite.size else float("nan"),
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
