"""Datasets by URI, their content hash, the split, and the release identity."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from model.data import DatasetError, S3Access, identify_dataset, load_dataset, split_dataset
from model.lineage import (
    MODEL_DIR,
    TRAINING_LIBRARIES,
    ReleaseInputs,
    code_hash,
    plan_release,
    release_id,
    training_runtime,
)
from model.spec import TrainingSpec
from tests.services import S3Service, free_port

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
        "from model.lineage import plan_release;"
        "from model.spec import TrainingSpec; import json, sys;"
        "print(plan_release(TrainingSpec.model_validate(json.loads(sys.argv[1]))).release_id)"
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
    here = plan_release(SPEC).release_id
    assert _release_id_in_subprocess() == here == _release_id_in_subprocess()
    assert len(here) == 12


def test_release_id_changes_with_data_params_and_model_code(tmp_path: Path) -> None:
    data_hash = load_dataset(SPEC.dataset).content_hash
    runtime = training_runtime()
    base = release_id(SPEC, data_hash, code_hash(), runtime)
    assert base == plan_release(SPEC).release_id
    other_params = SPEC.model_copy(update={"params": {"n_estimators": 11}})
    assert release_id(other_params, data_hash, code_hash(), runtime) != base
    assert release_id(SPEC, load_dataset("sklearn:iris").content_hash, code_hash(), runtime) != base

    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash(copy) == code_hash()
    with (copy / "evaluate.py").open("a") as handle:
        handle.write("\n# a change to the training code\n")
    assert release_id(SPEC, data_hash, code_hash(copy), runtime) != base


def test_the_training_runtime_is_part_of_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scikit-learn upgrade (or another Python) is a new release, and the mismatch says which."""
    import model.lineage

    runtime = training_runtime()
    assert runtime["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert set(runtime) == {"python", *TRAINING_LIBRARIES}
    here = plan_release(SPEC)

    real = model.lineage.version
    monkeypatch.setattr(model.lineage, "version", lambda n: "1.7.0" if n == "scikit-learn" else real(n))
    upgraded = plan_release(SPEC)
    assert upgraded.release_id != here.release_id
    assert upgraded.inputs.differences(here.inputs) == [
        f"scikit-learn 1.7.0 here, {runtime['scikit-learn']} expected"
    ]
    # Round trip of what the Job receives in its config map.
    assert ReleaseInputs.from_dict(upgraded.inputs.to_dict()) == upgraded.inputs
    tampered = {**upgraded.inputs.to_dict(), "release_id": here.release_id}
    with pytest.raises(ValueError, match="release inputs hash to"):
        ReleaseInputs.from_dict(tampered)


def test_dataset_identity_is_cached_by_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model.data

    path = tmp_path / "wine.csv"
    load_dataset("sklearn:wine").frame.to_csv(path, index=False)
    reads: list[str] = []
    real_read = model.data._read

    def counted(uri: str, access: S3Access | None) -> bytes:
        reads.append(uri)
        return real_read(uri, access)

    monkeypatch.setattr(model.data, "_read", counted)
    cache = tmp_path / "cache"
    first = identify_dataset(str(path), cache_dir=cache)
    again = identify_dataset(str(path), cache_dir=cache)
    assert first == again and reads == [str(path)]  # the second one read only the file's stat
    assert first.content_hash == load_dataset("sklearn:wine").content_hash
    frame = pd.read_csv(path)
    frame.iloc[0, 0] += 1.0
    frame.to_csv(path, index=False)
    changed = identify_dataset(str(path), cache_dir=cache)
    assert changed.content_hash != first.content_hash and len(reads) == 2


@pytest.mark.integration
def test_s3_dataset_identity_uses_the_given_credentials_and_the_etag(
    s3: S3Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.data

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)  # nothing ambient: only the explicit access works
    access = S3Access(s3.endpoint_url, s3.access_key, s3.secret_key, s3.region)
    bucket = s3.make_bucket("data")
    frame = load_dataset("sklearn:diabetes").frame
    s3.client().put_object(Bucket=bucket, Key="d.csv", Body=frame.to_csv(index=False).encode())
    uri = f"s3://{bucket}/d.csv"
    reads: list[str] = []
    real_read = model.data._read

    def counted(uri: str, access: S3Access | None) -> bytes:
        reads.append(uri)
        return real_read(uri, access)

    monkeypatch.setattr(model.data, "_read", counted)

    first = identify_dataset(uri, access, tmp_path)
    assert identify_dataset(uri, access, tmp_path) == first and reads == [uri]
    assert first.content_hash == load_dataset("sklearn:diabetes").content_hash
    s3.client().put_object(Bucket=bucket, Key="d.csv", Body=frame.iloc[:-1].to_csv(index=False).encode())
    assert identify_dataset(uri, access, tmp_path).rows == len(frame) - 1 and len(reads) == 2

    wrong = S3Access(s3.endpoint_url, s3.access_key, "not-the-secret", s3.region)
    with pytest.raises(DatasetError, match=rf"dataset {uri} cannot be read with these credentials"):
        identify_dataset(uri, wrong, tmp_path)


def test_an_unreachable_dataset_store_is_a_registry_failure() -> None:
    from model.errors import ExitCode, RegistryError, exit_code_for

    dead = S3Access(f"http://127.0.0.1:{free_port()}", "k", "s")
    with pytest.raises(RegistryError, match=r"dataset store for s3://b/d\.csv could not be reached") as info:
        identify_dataset("s3://b/d.csv", dead, None)
    assert exit_code_for(info.value) is ExitCode.REGISTRY


def test_serving_code_does_not_change_the_release(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "server" / "extra.py").write_text("# serving-only change\n")
    assert code_hash(copy) == code_hash()
