"""Publishing a release folder so that a half-finished upload is never mistaken for a release.

`release.json` is the commit marker. It is written last, once every other object of the release
is in the store with the SHA-256 it has in staging, and it lists those objects
(`ReleaseMetadata.files`). A folder without it is an upload that never finished: readers refuse
it (`IncompleteRelease`), and training registers a version only after it is written. Publishing
compares staging with what the store holds first, so a re-run after a crash uploads only what
is missing or differs; a committed folder is never rewritten: a re-run adopts it as it is.

One writer per release folder at a time (the training Job `train-<release_id>` is one per release).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from model.artifact import (
    MODEL_SUBDIR,
    REGISTRATION_FILE,
    RELEASE_FILE,
    ArtifactError,
    IncompleteRelease,
    ReleaseMetadata,
    file_sha256,
    tree_checksum,
)
from model.data import S3Access, s3_client, split_s3_uri
from model.errors import BadConfig, ExitCode, RegistryError, ReleaseError
from model.registry import registry_call

__all__ = ["Published", "ReleaseConflict", "publish_release", "read_marker"]

OnStored = Callable[[str], None]
_NOT_RELEASE_OBJECTS = frozenset({RELEASE_FILE, REGISTRATION_FILE})


class ReleaseConflict(ReleaseError, RuntimeError):
    """A committed release folder that no longer matches its marker: a re-run cannot fix that."""

    exit_code = ExitCode.BAD_CONFIG


@dataclass(frozen=True)
class Published:
    metadata: ReleaseMetadata
    """The committed record: the one written now, or the one found in the store."""
    uploaded: tuple[str, ...]
    """Objects this call wrote, in order (the marker last); empty when the folder was committed."""
    kept: int
    """Objects already in the store with the right SHA-256."""

    @property
    def adopted(self) -> bool:
        return not self.uploaded


class _Folder(Protocol):
    """One release folder in a store; paths are relative to it, with `/`."""

    @property
    def uri(self) -> str: ...

    def listing(self) -> set[str]: ...
    def read(self, rel: str) -> bytes | None: ...
    def write(self, rel: str, data: bytes) -> None: ...
    def delete(self, rel: str) -> None: ...


@dataclass(frozen=True)
class _S3Folder:
    uri: str
    client: Any

    @property
    def _where(self) -> tuple[str, str]:
        bucket, prefix = split_s3_uri(self.uri)
        return bucket, prefix.rstrip("/")

    def listing(self) -> set[str]:
        bucket, prefix = self._where
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            found.update(item["Key"][len(prefix) + 1 :] for item in page.get("Contents", []))
        return found

    def read(self, rel: str) -> bytes | None:
        from botocore.exceptions import ClientError

        bucket, prefix = self._where
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def write(self, rel: str, data: bytes) -> None:
        bucket, prefix = self._where
        self.client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)

    def delete(self, rel: str) -> None:
        bucket, prefix = self._where
        self.client.delete_object(Bucket=bucket, Key=f"{prefix}/{rel}")


@dataclass(frozen=True)
class _LocalFolder:
    uri: str
    root: Path

    def listing(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def read(self, rel: str) -> bytes | None:
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None

    def write(self, rel: str, data: bytes) -> None:
        """Atomic (a temporary file renamed over the target): a crash leaves the old file or the new."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)


def _open(uri: str, access: S3Access | None) -> _Folder:
    if uri.startswith("s3://"):
        return _S3Folder(uri, s3_client(access))
    if "://" in uri and not uri.startswith("file://"):
        raise BadConfig(f"release folder {uri}: the artifact store must be s3://... or a local path")
    return _LocalFolder(uri, Path(urlparse(uri).path if uri.startswith("file://") else uri).resolve())


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def read_marker(uri: str, release_id: str, access: S3Access | None = None) -> ReleaseMetadata:
    """The release record of a committed folder; `IncompleteRelease` when it has no marker."""
    folder = _open(uri, access)
    with registry_call(f"reading {uri}/{RELEASE_FILE}"):
        data = folder.read(RELEASE_FILE)
    if data is None:
        raise IncompleteRelease(release_id, uri)
    return ReleaseMetadata.from_json(data.decode())


def publish_release(
    staging: Path,
    uri: str,
    metadata: ReleaseMetadata,
    access: S3Access | None = None,
    on_stored: OnStored | None = None,
) -> Published:
    """Store the staged release at `uri` and commit it (its marker last); or adopt the folder
    already committed there. `on_stored` is called with each object's path once it is stored."""
    folder = _open(uri, access)
    with registry_call(f"uploading release artifacts to {uri}"):
        found = _committed(folder, metadata.release_id)
        if found is not None:
            return Published(found, (), len(found.files) or len(folder.listing()))
        staged = {p.relative_to(staging).as_posix(): p for p in staging.rglob("*") if p.is_file()}
        local = {rel: file_sha256(p) for rel, p in staged.items() if rel not in _NOT_RELEASE_OBJECTS}
        uploaded, kept = _sync(folder, staging, local, on_stored)
        record = replace(metadata, files=local)
        folder.write(RELEASE_FILE, record.to_json().encode())
        if folder.read(RELEASE_FILE) != record.to_json().encode():
            raise RegistryError(f"{uri}/{RELEASE_FILE} does not read back as written")
        if on_stored is not None:
            on_stored(RELEASE_FILE)
    return Published(record, (*uploaded, RELEASE_FILE), kept)


def _committed(folder: _Folder, release_id: str) -> ReleaseMetadata | None:
    """The folder's record when its marker is there and every object matches it; None when
    there is no marker (nothing committed yet, or a pre-manifest record left by a crash)."""
    data = folder.read(RELEASE_FILE)
    if data is None:
        return None
    try:
        record = ReleaseMetadata.from_json(data.decode())
    except (ArtifactError, ValueError, TypeError) as exc:
        raise ReleaseConflict(
            f"{folder.uri}/{RELEASE_FILE} is not a release record ({exc}); {_FIX.format(uri=folder.uri)}"
        ) from exc
    if record.release_id != release_id:
        raise ReleaseConflict(
            f"{folder.uri}/{RELEASE_FILE} records release {record.release_id}, not {release_id}; "
            + _FIX.format(uri=folder.uri)
        )
    stored = {rel: _sha256(folder.read(rel)) for rel in folder.listing() - _NOT_RELEASE_OBJECTS}
    model = {r: d for r, d in stored.items() if d and r.startswith(f"{MODEL_SUBDIR}/")}
    model_ok = bool(model) and tree_checksum({r[len(MODEL_SUBDIR) + 1 :]: d for r, d in model.items()}) == (
        record.model_sha256
    )
    if not record.files:
        # Written before release.json was the commit marker (and uploaded in no set order):
        # complete when its model matches; otherwise finish it as an uncommitted folder.
        if model_ok:
            return record
        folder.delete(RELEASE_FILE)
        return None
    differ = sorted(
        rel for rel in record.files.keys() | stored.keys() if record.files.get(rel) != stored.get(rel)
    )
    if differ or not model_ok:
        raise ReleaseConflict(
            f"release {release_id} at {folder.uri} is committed, but its objects no longer match "
            f"its marker ({', '.join(differ) or 'model checksum'}); {_FIX.format(uri=folder.uri)}"
        )
    return record


_FIX = (
    "a committed release folder is never rewritten: find out who changed it, then delete every "
    "object under {uri}/ and re-run the release"
)


def _sync(
    folder: _Folder, staging: Path, local: dict[str, str], on_stored: OnStored | None
) -> tuple[list[str], int]:
    """Upload what is missing or differs (path order), remove what staging does not have, then
    check every object reads back with its checksum. Returns (uploaded, kept)."""
    present = folder.listing()
    uploaded: list[str] = []
    for rel in sorted(local):
        if rel in present and _sha256(folder.read(rel)) == local[rel]:
            continue
        folder.write(rel, (staging / rel).read_bytes())
        uploaded.append(rel)
        if on_stored is not None:
            on_stored(rel)
    for rel in sorted(present - local.keys() - _NOT_RELEASE_OBJECTS):
        folder.delete(rel)  # left by an earlier attempt; model/ must hold exactly the model
    listed = folder.listing()
    wrong = sorted(
        rel
        for rel in local
        if rel not in listed or (rel in uploaded and _sha256(folder.read(rel)) != local[rel])
    )
    if wrong:
        raise RegistryError(
            f"upload to {folder.uri} is incomplete ({', '.join(wrong)} missing or different after "
            "the upload); nothing was committed"
        )
    return uploaded, len(local) - len(uploaded)
