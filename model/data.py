"""Datasets addressed by URI, their content hash (the data version) and the deterministic split."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from model.errors import BadConfig, RegistryError

__all__ = [
    "BUNDLED",
    "DATASET_SUFFIXES",
    "Dataset",
    "DatasetError",
    "DatasetIdentity",
    "S3Access",
    "Split",
    "content_hash",
    "identify_dataset",
    "is_local",
    "list_dataset_files",
    "load_dataset",
    "s3_client",
    "split_dataset",
    "split_s3_uri",
]

BUNDLED = ("breast_cancer", "diabetes", "iris", "wine")
"""Datasets shipped inside scikit-learn: usable with no network at all."""
DATASET_SUFFIXES = (".csv", ".parquet", ".pq")
"""The file formats a dataset URI may name (case-insensitive)."""


class DatasetError(BadConfig):
    """A dataset URI that cannot be read, or a frame that does not fit the spec."""


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3 API: the stack's endpoint and credentials, or the ambient ones."""

    endpoint_url: str | None = None
    """None: AWS (or the endpoint variables boto3 and MLflow read)."""
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    """Both None: the standard AWS credential chain (environment, profile, IRSA...)."""
    region: str | None = None

    @classmethod
    def from_env(cls) -> S3Access:
        """The endpoint MLflow and the AWS SDKs read from the environment; ambient credentials."""
        return cls(
            endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )


@dataclass(frozen=True)
class Dataset:
    uri: str
    frame: pd.DataFrame
    content_hash: str

    def features_and_target(self, target: str) -> tuple[pd.DataFrame, pd.Series]:
        self.identity.check_target(target)
        return self.frame.drop(columns=[target]), self.frame[target]

    @property
    def identity(self) -> DatasetIdentity:
        numeric = [pd.api.types.is_numeric_dtype(self.frame[c]) for c in self.frame.columns]
        return DatasetIdentity(
            self.uri,
            self.content_hash,
            len(self.frame),
            tuple(map(str, self.frame.columns)),
            tuple(c for c, ok in zip(self.frame.columns, numeric, strict=True) if not ok),
        )


@dataclass(frozen=True)
class DatasetIdentity:
    """What the release id and the spec checks need of a dataset, without its rows."""

    uri: str
    content_hash: str
    rows: int
    columns: tuple[str, ...]
    non_numeric: tuple[str, ...]

    def check_target(self, target: str) -> None:
        """The target is a column and every other column is a numeric feature."""
        if target not in self.columns:
            raise DatasetError(
                f"target column {target!r} is not in dataset {self.uri}; columns: {', '.join(self.columns)}"
            )
        features = [c for c in self.non_numeric if c != target]
        if features:
            raise DatasetError(
                f"feature column(s) {', '.join(features)} of {self.uri} are not numeric; "
                "encode them before training"
            )


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def load_dataset(uri: str, access: S3Access | None = None) -> Dataset:
    frame = _bundled(uri) if uri.startswith("sklearn:") else _read_bytes(uri, _read(uri, access))
    if frame.empty:
        raise DatasetError(f"dataset {uri} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    return Dataset(uri=uri, frame=frame, content_hash=content_hash(frame))


def identify_dataset(
    uri: str, access: S3Access | None = None, cache_dir: Path | None = None
) -> DatasetIdentity:
    """The dataset's identity, reading it only when its stored version is not in the cache.

    Remote objects are known by their version metadata (ETag, version id, size), files by size
    and modification time; with `cache_dir`, identities are kept in `dataset-hashes.json` there,
    so a `pulumi preview` does not download a large dataset again to learn it did not change.
    """
    if uri.startswith("sklearn:") or cache_dir is None:
        return load_dataset(uri, access).identity
    stamp = _version_stamp(uri, access)
    cache = _IdentityCache(cache_dir / "dataset-hashes.json")
    if (hit := cache.get(uri, stamp)) is not None:
        return hit
    identity = load_dataset(uri, access).identity
    cache.put(uri, stamp, identity)
    return identity


def _bundled(uri: str) -> pd.DataFrame:
    name = uri.removeprefix("sklearn:")
    if name not in BUNDLED:
        raise DatasetError(
            f"unknown bundled dataset {uri!r}; allowed: " + ", ".join(f"sklearn:{n}" for n in BUNDLED)
        )
    frame: pd.DataFrame = getattr(sk_datasets, f"load_{name}")(as_frame=True).frame
    return frame


def is_local(uri: str) -> bool:
    """A dataset that only exists on this machine (a path or file:// URI)."""
    return not uri.startswith(("sklearn:", "s3://"))


def _local_path(uri: str) -> Path:
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    return path


def list_dataset_files(prefix: str, access: S3Access | None = None) -> list[str]:
    """The URI of every dataset file (a DATASET_SUFFIXES name) under `prefix`, at any depth, unsorted.

    `prefix` is an s3:// prefix or a folder; other files there (_SUCCESS, README) are left out.
    """
    base = prefix if prefix.endswith("/") else prefix + "/"
    if base.startswith("s3://"):
        bucket, key_prefix = split_s3_uri(base)

        def keys(client: Any) -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        names = [key[len(key_prefix) :] for key in _s3_call(base, access, keys)]
    else:
        folder = Path(base.removeprefix("file://"))
        if not folder.is_dir():
            raise DatasetError(f"dataset folder {folder} does not exist")
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return [base + name for name in names if name.lower().endswith(DATASET_SUFFIXES)]


def _read(uri: str, access: S3Access | None) -> bytes:
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        obj = _s3_call(uri, access, lambda c: c.get_object(Bucket=bucket, Key=key))
        body: bytes = obj["Body"].read()
        return body
    return _local_path(uri).read_bytes()


def _version_stamp(uri: str, access: S3Access | None) -> str:
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        head = _s3_call(uri, access, lambda c: c.head_object(Bucket=bucket, Key=key))
        return f"etag={head.get('ETag')};version={head.get('VersionId')};size={head.get('ContentLength')}"
    stat = _local_path(uri).stat()
    return f"size={stat.st_size};mtime_ns={stat.st_mtime_ns}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URI."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class _IdentityCache:
    """A JSON file of {uri: {stamp, identity}}; unreadable means empty, writes are atomic."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, uri: str, stamp: str) -> DatasetIdentity | None:
        entry = self._load().get(uri)
        if not isinstance(entry, dict) or entry.get("stamp") != stamp:
            return None
        try:
            raw = entry["identity"]
            return DatasetIdentity(
                uri, raw["content_hash"], int(raw["rows"]), tuple(raw["columns"]), tuple(raw["non_numeric"])
            )
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, uri: str, stamp: str, identity: DatasetIdentity) -> None:
        data = self._load()
        raw = {k: v for k, v in asdict(identity).items() if k != "uri"}
        data[uri] = {"stamp": stamp, "identity": raw}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _read_bytes(uri: str, data: bytes) -> pd.DataFrame:
    suffix = Path(urlparse(uri).path).suffix.lower()
    if suffix not in DATASET_SUFFIXES:
        raise DatasetError(f"dataset {uri}: unsupported format {suffix or '(none)'}; use .csv or .parquet")
    try:
        return pd.read_csv(io.BytesIO(data)) if suffix == ".csv" else pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise DatasetError(f"dataset {uri} could not be parsed as {suffix}: {exc}") from exc


def s3_client(access: S3Access | None = None) -> Any:
    """A boto3 S3 client for `access` (default: the environment's endpoint and credentials)."""
    import boto3
    from botocore.config import Config

    access = access or S3Access.from_env()
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint_url,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        region_name=access.region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
    )


_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_REFUSED = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def _s3_call(uri: str, access: S3Access | None, call: Callable[[Any], Any]) -> Any:
    """Run one S3 call; a missing or forbidden object is bad config, anything else a store failure."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(s3_client(access))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise DatasetError(f"dataset {uri} does not exist ({code})") from exc
        if code in _REFUSED:
            raise DatasetError(f"dataset {uri} cannot be read with these credentials ({code})") from exc
        raise RegistryError(f"dataset store for {uri} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise RegistryError(f"dataset store for {uri} could not be reached: {exc}") from exc


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
