"""Datasets addressed by URI, their content hash (the data version) and the deterministic split."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

__all__ = [
    "BUNDLED",
    "Dataset",
    "DatasetError",
    "Split",
    "content_hash",
    "load_dataset",
    "s3_client",
    "split_dataset",
]

BUNDLED = ("breast_cancer", "diabetes", "iris", "wine")
"""Datasets shipped inside scikit-learn: usable with no network at all."""


class DatasetError(ValueError):
    """A dataset URI that cannot be read, or a frame that does not fit the spec."""


@dataclass(frozen=True)
class Dataset:
    uri: str
    frame: pd.DataFrame
    content_hash: str

    def features_and_target(self, target: str) -> tuple[pd.DataFrame, pd.Series]:
        if target not in self.frame.columns:
            raise DatasetError(
                f"target column {target!r} is not in dataset {self.uri}; "
                f"columns: {', '.join(map(str, self.frame.columns))}"
            )
        features = self.frame.drop(columns=[target])
        non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
        if non_numeric:
            raise DatasetError(
                f"feature column(s) {', '.join(map(str, non_numeric))} of {self.uri} are not "
                "numeric; encode them before training"
            )
        return features, self.frame[target]


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def load_dataset(uri: str) -> Dataset:
    frame = _read(uri)
    if frame.empty:
        raise DatasetError(f"dataset {uri} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    return Dataset(uri=uri, frame=frame, content_hash=content_hash(frame))


def _read(uri: str) -> pd.DataFrame:
    if uri.startswith("sklearn:"):
        name = uri.removeprefix("sklearn:")
        if name not in BUNDLED:
            raise DatasetError(
                f"unknown bundled dataset {uri!r}; allowed: " + ", ".join(f"sklearn:{n}" for n in BUNDLED)
            )
        bunch = getattr(sk_datasets, f"load_{name}")(as_frame=True)
        return bunch.frame
    if uri.startswith("s3://"):
        return _read_bytes(uri, _read_s3(uri))
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    return _read_bytes(uri, path.read_bytes())


def _read_bytes(uri: str, data: bytes) -> pd.DataFrame:
    suffix = Path(urlparse(uri).path).suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(io.BytesIO(data))
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise DatasetError(f"dataset {uri} could not be parsed as {suffix}: {exc}") from exc
    raise DatasetError(f"dataset {uri}: unsupported format {suffix or '(none)'}; use .csv or .parquet")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client honouring MLflow's and AWS's endpoint variables (MinIO, SeaweedFS...)."""
    import boto3
    from botocore.config import Config

    endpoint = (
        endpoint_url
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
    )


def _read_s3(uri: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    try:
        obj = s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        body: bytes = obj["Body"].read()
        return body
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise DatasetError(f"dataset {uri} does not exist ({code})") from exc
        raise DatasetError(f"dataset {uri} could not be read: {exc}") from exc
    except BotoCoreError as exc:
        raise DatasetError(f"dataset {uri} could not be read: {exc}") from exc


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a canonical serialisation: column names, a canonical dtype and the values.

    Independent of pandas' own formats and of the file format the data came in, so the same
    table read from CSV or Parquet has the same version.
    """
    digest = hashlib.sha256()
    digest.update(f"rows={len(frame)};cols={frame.shape[1]}\n".encode())
    for name in frame.columns:
        column = frame[name]
        digest.update(f"{name}\0".encode())
        if pd.api.types.is_bool_dtype(column):
            digest.update(b"bool\0" + column.to_numpy(dtype=np.uint8).tobytes())
        elif pd.api.types.is_numeric_dtype(column):
            # Integers and floats alike as little-endian float64, NaN made canonical.
            values = column.to_numpy(dtype="<f8", na_value=np.nan)
            values = np.where(np.isnan(values), np.float64("nan"), values)
            digest.update(b"num\0" + values.tobytes())
        else:
            for item in column.astype("string").fillna("\x00<NA>"):
                encoded = str(item).encode()
                digest.update(len(encoded).to_bytes(8, "little") + encoded)
        digest.update(b"\n")
    return digest.hexdigest()


def split_dataset(dataset: Dataset, target: str, test_size: float, seed: int, stratify: bool) -> Split:
    X, y = dataset.features_and_target(target)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, random_state=seed, stratify=y if stratify else None
        )
    except ValueError as exc:
        raise DatasetError(f"dataset {dataset.uri} cannot be split on {target!r}: {exc}") from exc
    return Split(X_train, X_test, y_train, y_test)
