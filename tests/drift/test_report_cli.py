"""`mlops drift`: exit codes, the table, and the HTML report with its images."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.cli import app
from tests.drift.conftest import TrainedRelease

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["drift", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_training_data_exits_0(classifier: TrainedRelease) -> None:
    code, out, _ = run("--model-uri", str(classifier.folder), "--data", str(classifier.data))
    assert code == 0, out
    for name in [*classifier.features.columns, "prediction"]:
        assert re.search(rf"│ {name}\s+│\s+0\.0\d+ │", out), name
    assert "no drift" in out and " yes " not in out


def test_a_bundled_dataset_is_read_and_its_target_dropped(regressor: TrainedRelease) -> None:
    code, out, _ = run("--model-uri", str(regressor.folder), "--data", "sklearn:diabetes")
    assert code == 0, out
    assert "│ target" not in out and "442 rows" in out


def test_shifted_data_exits_2_and_writes_the_report(classifier: TrainedRelease, tmp_path: Path) -> None:
    data = tmp_path / "shifted.csv"
    frame = classifier.shifted(["x2", "x5"])
    frame["label"] = 0  # the target column, as a scoring log would keep it, is dropped
    frame.to_csv(data, index=False)
    out_dir = tmp_path / "report"
    code, out, err = run("--model-uri", str(classifier.folder), "--data", str(data), "--out", str(out_dir))
    assert code == 2, out + err
    assert re.search(r"│ x2\s+│\s+[\d.]+ │\s+[\d.]+ │\s+yes │", out)
    assert re.search(r"drift in x2, x5(, prediction)?$", out, re.M)
    # The two shifted features are informative: the predictions may have moved as well.
    prediction_drifted = re.search(r"│ prediction\s+│\s+[\d.]+ │\s+n/a │\s+yes │", out) is not None
    expected = ["002-x2.png", "005-x5.png", *(["prediction.png"] if prediction_drifted else [])]
    images = sorted(p.name for p in out_dir.glob("*.png"))
    assert images == sorted(expected)
    for image in images:
        assert (out_dir / image).read_bytes().startswith(PNG_MAGIC)
    page = (out_dir / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == images
    assert page.count("<tr class=drifted>") == len(images)
    assert f"drift in {len(images)} of 9 distributions" in page
    assert f"wrote {out_dir / 'index.html'} and {len(images)} image(s)" in err


def test_thresholds_decide_what_is_drift(classifier: TrainedRelease, tmp_path: Path) -> None:
    data = tmp_path / "shifted.csv"
    classifier.shifted(["x2"]).to_csv(data, index=False)
    base = ("--model-uri", str(classifier.folder), "--data", str(data))
    assert run(*base)[0] == 2
    assert run(*base, "--psi-threshold", "50", "--ks-threshold", "0.9")[0] == 0
    assert run(*base, "--psi-threshold", "50")[0] == 2  # KS alone still flags x2


@pytest.mark.parametrize(
    "problem", ["no-profile", "no-release", "no-data", "columns", "nan", "threshold", "nan-threshold"]
)
def test_errors_exit_1_with_one_line(problem: str, classifier: TrainedRelease, tmp_path: Path) -> None:
    release, data = str(classifier.folder), str(classifier.data)
    extra: tuple[str, ...] = ()
    if problem == "no-profile":
        shutil.copytree(classifier.folder, tmp_path / "release")
        (tmp_path / "release" / "reference_profile.json").unlink()
        release, expected = str(tmp_path / "release"), "reference_profile.json does not exist"
    elif problem == "no-release":
        release, expected = str(tmp_path), "is not a release folder"
    elif problem == "no-data":
        data, expected = str(tmp_path / "missing.csv"), "missing.csv does not exist"
    elif problem == "columns":
        classifier.features.drop(columns="x4").to_csv(tmp_path / "d.csv", index=False)
        data, expected = str(tmp_path / "d.csv"), "missing x4"
    elif problem == "nan":
        frame = classifier.features.copy()
        frame.loc[7, "x1"] = None
        frame.to_csv(tmp_path / "d.csv", index=False)
        data, expected = (
            str(tmp_path / "d.csv"),
            "'x1' has 1 missing or non-finite value(s), the first in row 7",
        )
    elif problem == "threshold":
        extra, expected = ("--psi-threshold", "-1"), "thresholds must be >= 0"
    else:  # refused before the release is looked at: this one is no release at all
        release, extra, expected = str(tmp_path), ("--ks-threshold", "nan"), "(got PSI 0.2, KS nan)"
    code, out, err = run("--model-uri", release, "--data", data, *extra)
    assert code == 1, out + err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    if problem in ("no-profile", "no-release"):
        assert err.startswith(f"error: release {release}: ")
    assert out == ""


def test_a_usage_error_exits_1_not_2() -> None:
    code, _, _ = run("--model-uri", "somewhere")
    assert code == 1
