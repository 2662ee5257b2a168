"""Datasets by URI, their content hash, the split, and the release identity."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from model.data import DatasetError, load_dataset, split_dataset
from model.lineage import MODEL_DIR, code_hash, release_id
from model.spec import TrainingSpec
from tests.services import S3Service

REPO = Path(__file__).resolve().parents[2]
SPEC = TrainingSpec(
    model_name="wine",
    dataset="sklearn:wine",
    target="target",
    task="classification",
    estimator="random_forest",
    params={"n_estimators": 10},
)


def test_bundled_csv_and_parquet_share_one_content_hash(tmp_path: Path) -> None:
    bundled = load_dataset("sklearn:wine")
    bundled.frame.to_csv(tmp_path / "wine.csv", index=False)
    bundled.frame.to_parquet(tmp_path / "wine.parquet", index=False)
    assert load_dataset(str(tmp_path / "wine.csv")).content_hash == bundled.content_hash
    assert load_dataset(f"file://{tmp_path / 'wine.parquet'}").content_hash == bundled.content_hash


def test_one_changed_value_changes_the_hash(tmp_path: Path) -> None:
    frame = load_dataset("sklearn:wine").frame.copy()
    before = load_dataset("sklearn:wine").content_hash
    frame.iloc[3, 2] += 0.001
    frame.to_csv(tmp_path / "changed.csv", index=False)
    assert load_dataset(str(tmp_path / "changed.csv")).content_hash != before


@pytest.mark.integration
def test_s3_dataset_through_boto3(s3_env: S3Service, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket("data")
    frame = load_dataset("sklearn:diabetes").frame
    s3_env.client().put_object(Bucket=bucket, Key="d/diabetes.csv", Body=frame.to_csv(index=False).encode())
    loaded = load_dataset(f"s3://{bucket}/d/diabetes.csv")
    assert loaded.content_hash == load_dataset("sklearn:diabetes").content_hash
    with pytest.raises(DatasetError, match=rf"s3://{bucket}/d/missing.csv does not exist"):
        load_dataset(f"s3://{bucket}/d/missing.csv")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sklearn:mnist", "unknown bundled dataset 'sklearn:mnist'; allowed: sklearn:breast_cancer"),
        ("/nonexistent/data.csv", "dataset file /nonexistent/data.csv does not exist"),
    ],
)
def test_missing_datasets_are_clear_errors(uri: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(uri)


def test_unsupported_format(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"unsupported format \.json; use \.csv or \.parquet"):
        load_dataset(str(tmp_path / "data.json"))


def test_wrong_target_column_names_the_columns() -> None:
    with pytest.raises(
        DatasetError, match=r"target column 'label' is not in dataset sklearn:wine; columns: alcohol"
    ):
        split_dataset(load_dataset("sklearn:wine"), "label", 0.25, 0, stratify=True)


def test_split_is_deterministic_from_the_seed() -> None:
    data = load_dataset("sklearn:wine")
    a = split_dataset(data, "target", 0.25, 11, stratify=True)
    b = split_dataset(data, "target", 0.25, 11, stratify=True)
    c = split_dataset(data, "target", 0.25, 12, stratify=True)
    pd.testing.assert_frame_equal(a.X_test, b.X_test)
    assert not a.X_test.index.equals(c.X_test.index)


def _release_id_in_subprocess() -> str:
    code = (
        "from model.data import load_dataset; from model.lineage import code_hash, release_id;"
        "from model.spec import TrainingSpec; import json, sys;"
        "spec = TrainingSpec.model_validate(json.loads(sys.argv[1]));"
        "print(release_id(spec, load_dataset(spec.dataset).content_hash, code_hash()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, SPEC.model_dump_json()],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "random", "PATH": "/usr/bin:/bin"},
    )
    return result.stdout.strip()


def test_release_id_is_identical_across_processes() -> None:
    here = release_id(SPEC, load_dataset(SPEC.dataset).content_hash, code_hash())
    assert _release_id_in_subprocess() == here == _release_id_in_subprocess()
    assert len(here) == 12


def test_release_id_changes_with_data_params_and_model_code(tmp_path: Path) -> None:
    data_hash = load_dataset(SPEC.dataset).content_hash
    base = release_id(SPEC, data_hash, code_hash())
    other_params = SPEC.model_copy(update={"params": {"n_estimators": 11}})
    assert release_id(other_params, data_hash, code_hash()) != base
    assert release_id(SPEC, load_dataset("sklearn:iris").content_hash, code_hash()) != base

    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash(copy) == code_hash()
    with (copy / "evaluate.py").open("a") as handle:
        handle.write("\n# a change to the training code\n")
    assert release_id(SPEC, data_hash, code_hash(copy)) != base


def test_serving_code_does_not_change_the_release(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "server" / "extra.py").write_text("# serving-only change\n")
    assert code_hash(copy) == code_hash()
