"""`mlops drift`: a dataset against the training profile of a release, as a table and a report.

The release folder comes through the model server's loader (a path, file://, s3:// or
models:/, checksum verified) and the dataset through the training code's reader (a CSV or
Parquet path, s3:// or sklearn:<name>), so the command reads exactly what training and
serving read. The release's target column is dropped when the data has it; the model
predicts the rows so that the predictions' drift is scored too.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from model.drift import DriftReport, FeatureProfile, ReferenceProfile
    from model.server.loader import LoadedRelease

__all__ = ["DriftRun", "ReportError", "run_drift", "write_report"]


class ReportError(Exception):
    """Why the report could not be made, in one line: release, profile, data or columns."""


@dataclass(frozen=True)
class DriftRun:
    model_name: str
    release_id: str
    data_uri: str
    profile: ReferenceProfile
    report: DriftReport
    X: np.ndarray
    """The scored rows, in the profile's feature order."""
    predictions: np.ndarray


def run_drift(
    model_uri: str, data_uri: str, psi_threshold: float | None = None, ks_threshold: float | None = None
) -> DriftRun:
    """Load the release and the data, predict, and score both against the release's profile."""
    from model.drift import DEFAULT_KS_THRESHOLD, DEFAULT_PSI_THRESHOLD, DriftError, check_thresholds, score

    psi_limit = DEFAULT_PSI_THRESHOLD if psi_threshold is None else psi_threshold
    ks_limit = DEFAULT_KS_THRESHOLD if ks_threshold is None else ks_threshold
    try:
        check_thresholds(psi_limit, ks_limit)  # before the release is fetched and loaded
    except DriftError as exc:
        raise ReportError(str(exc)) from None
    release, profile = _release(model_uri)
    X = _features(data_uri, profile, release.target)
    predictions = release.runtime.predict(X).values
    try:
        report = score(profile, X, predictions, psi_limit, ks_limit)
    except DriftError as exc:  # predictions the profile cannot take (e.g. non-finite values)
        raise ReportError(f"release {model_uri}: {exc}") from None
    return DriftRun(release.model_name, release.release_id, data_uri, profile, report, X, predictions)


def _release(model_uri: str) -> tuple[LoadedRelease, ReferenceProfile]:
    """The release (verified, its runtime loaded) and its profile."""
    from model.artifact import PROFILE_FILE
    from model.drift import ProfileError, read_profile
    from model.server.loader import LoadError, load_release

    try:
        release = load_release(model_uri, None, None)
        return release, read_profile(release.folder / PROFILE_FILE)
    except (LoadError, ProfileError) as exc:
        raise ReportError(f"release {model_uri}: {exc}") from None


def _features(data_uri: str, profile: ReferenceProfile, target: str | None) -> np.ndarray:
    """The dataset's feature columns in the profile's order, its target column dropped."""
    from model.data import load_dataset
    from model.drift import DriftError, feature_matrix
    from model.errors import ReleaseError

    try:
        frame = load_dataset(data_uri).frame
        if target in frame.columns:
            frame = frame.drop(columns=[target])
        return feature_matrix(profile, frame)
    except DriftError as exc:
        raise ReportError(f"{data_uri}: {exc}") from None
    except ReleaseError as exc:  # unreadable data: the message names the URI
        raise ReportError(str(exc)) from None


def write_report(run: DriftRun, out_dir: Path) -> list[Path]:
    """A PNG per drifted feature (and for drifted predictions) and index.html showing them all."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    report = run.report
    for j, (feature, drift) in enumerate(zip(run.profile.features, report.features, strict=True)):
        if report.is_drifted(drift):
            name = f"{j:03d}-{_slug(feature.name)}.png"
            _plot_feature(feature, run.X[:, j], drift.psi, drift.ks, out_dir / name)
            images[feature.name] = name
    prediction = report.prediction
    if prediction is not None and report.is_drifted(prediction):
        name = "prediction.png"
        _plot_prediction(run.profile, run.predictions, prediction.psi, prediction.ks, out_dir / name)
        images["prediction"] = name
    page = out_dir / "index.html"
    page.write_text(_html(run, images))
    return [page, *(out_dir / name for name in images.values())]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "feature"


def _title(name: str, psi: float, ks: float | None) -> str:
    return f"{name}: PSI {psi:.3f}" + ("" if ks is None else f", KS {ks:.3f}")


def _plot_feature(
    feature: FeatureProfile, current: np.ndarray, psi: float, ks: float | None, path: Path
) -> None:
    """Densities (when the profile has quantiles) and the PSI bins' shares, reference against current."""
    import matplotlib.pyplot as plt

    from model.drift import Grid

    grid = Grid.of(feature)
    shares = grid.bin_counts(grid.count(current)) / len(current)
    panels = 2 if feature.quantiles else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.4), squeeze=False)
    if feature.quantiles:
        # Quantiles at evenly spaced probabilities are an evenly weighted sample of the reference.
        reference = np.asarray(feature.quantiles)
        low, high = min(reference.min(), current.min()), max(reference.max(), current.max())
        bins = np.linspace(low, high, 41) if high > low else 10
        ax = axes[0][0]
        ax.hist(reference, bins=bins, density=True, alpha=0.55, label="reference (training)")
        ax.hist(current, bins=bins, density=True, alpha=0.55, label="current")
        ax.set_xlabel(feature.name)
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    _share_bars(axes[0][-1], [str(i) for i in range(len(shares))], grid.reference, shares, "PSI bin")
    fig.suptitle(_title(feature.name, psi, ks))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_prediction(
    profile: ReferenceProfile, predictions: np.ndarray, psi: float, ks: float | None, path: Path
) -> None:
    import matplotlib.pyplot as plt

    from model.drift import ClassBins

    if profile.prediction is not None:
        _plot_feature(profile.prediction, predictions.astype(np.float64), psi, ks, path)
        return
    assert profile.class_frequencies is not None
    bins = ClassBins.of(profile.class_frequencies)
    shares = bins.count(predictions) / len(predictions)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    _share_bars(ax, [*bins.labels, "other"], bins.reference, shares, "predicted class")
    fig.suptitle(_title("prediction", psi, ks))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _share_bars(ax: Axes, labels: list[str], reference: np.ndarray, current: np.ndarray, xlabel: str) -> None:
    positions = np.arange(len(labels))
    ax.bar(positions - 0.2, reference, width=0.4, label="reference (training)")
    ax.bar(positions + 0.2, current, width=0.4, label="current")
    ax.set_xticks(positions, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize="small")


def _html(run: DriftRun, images: dict[str, str]) -> str:
    report = run.report
    rows = [(d, report.is_drifted(d)) for d in report.distributions]
    body = "\n".join(
        f"<tr{' class=drifted' if drifted else ''}><td>{html.escape(d.name)}</td><td>{d.psi:.4f}</td>"
        f"<td>{'n/a' if d.ks is None else f'{d.ks:.4f}'}</td><td>{'yes' if drifted else 'no'}</td></tr>"
        for d, drifted in rows
    )
    figures = "\n".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(feature)}: reference against current">'
        f"<figcaption>{html.escape(feature)}</figcaption></figure>"
        for feature, name in images.items()
    )
    drifted = sum(drifted for _, drifted in rows)
    verdict = f"drift in {drifted} of {len(rows)} distributions" if drifted else "no drift"
    title = f"Drift: {html.escape(run.model_name)} {run.release_id}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
tr.drifted{{background:#fde2e1}}figure{{display:inline-block;margin:1em}}</style></head>
<body><h1>Drift of {html.escape(run.data_uri)}</h1>
<p>Against release {run.release_id} of {html.escape(run.model_name)} ({report.rows} rows): {verdict}.
Thresholds: PSI &gt; {report.psi_threshold}, KS &gt; {report.ks_threshold}.</p>
<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>drifted</th></tr>
{body}
</table>
{figures}
</body></html>
"""
