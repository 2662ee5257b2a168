"""ReleaseRecord: what a finished training Job left behind, read back for the serving rollout.

A Kubernetes Job reports only success or failure, while serving needs the model checksum and
the registered version. This dynamic provider reads `<release_uri>/release.json` and
`<release_uri>/registration.json` (written by the Job once the version is registered) from the
artifact store, with the same endpoint and credentials that manage the bucket: no MLflow has to
be reachable from where `pulumi up` runs. It is created after the Job completes and replaced
with each new release; a record that is missing or belongs to another release is an error that
names the URI, and nothing is stored in the stack's state for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

__all__ = ["ReleaseRecord", "ReleaseRecordArgs", "ReleaseRecordProvider", "read_release_record"]

MLOPS_KIND = "release-record"


@dataclass(frozen=True)
class ReleaseRecordArgs:
    release_uri: pulumi.Input[str]
    """The release folder: s3://<bucket>/<model>/<release_id> (or a local path)."""
    model_name: pulumi.Input[str]
    """Registered model name."""
    release_id: pulumi.Input[str]
    """The release identity (12 hex digits)."""
    endpoint_url: pulumi.Input[str] | None = None
    """S3 endpoint as seen from where `pulumi up` runs; None means AWS."""
    access_key_id: pulumi.Input[str] | None = None
    """Secret."""
    secret_access_key: pulumi.Input[str] | None = None
    """Secret."""


class ReleaseRecordProvider(pulumi.dynamic.ResourceProvider):
    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        outs = {**props, **read_release_record(props), "mlops_kind": MLOPS_KIND}
        return pulumi.dynamic.CreateResult(id_=f"{props['model_name']}/{props['release_id']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        keys = ("release_uri", "model_name", "release_id", "endpoint_url")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_=id_, outs={**props, **read_release_record(props)})


def _read_text(uri: str, props: dict[str, Any]) -> str:
    if not uri.startswith("s3://"):
        path = uri.removeprefix("file://")
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri} does not exist") from None
    from botocore.exceptions import BotoCoreError, ClientError

    from model.data import S3Access, s3_client, split_s3_uri

    bucket, key = split_s3_uri(uri)
    endpoint = props.get("endpoint_url") or None
    access = S3Access(
        endpoint_url=endpoint,
        access_key_id=props.get("access_key_id") or None,
        secret_access_key=props.get("secret_access_key") or None,
    )
    try:
        return str(s3_client(access).get_object(Bucket=bucket, Key=key)["Body"].read().decode())
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise FileNotFoundError(f"{uri} does not exist ({code})") from exc
        raise RuntimeError(f"could not read {uri} from {endpoint or 'AWS S3'}: {exc}") from exc
    except BotoCoreError as exc:
        raise RuntimeError(f"could not read {uri} from {endpoint or 'AWS S3'}: {exc}") from exc


def read_release_record(props: dict[str, Any]) -> dict[str, Any]:
    """The release's checksum, gate result and registered version, checked against its id."""
    from model.artifact import REGISTRATION_FILE, RELEASE_FILE, Registration, ReleaseMetadata

    folder = str(props["release_uri"]).rstrip("/")
    rid, model = str(props["release_id"]), str(props["model_name"])
    try:
        metadata = ReleaseMetadata.from_json(_read_text(f"{folder}/{RELEASE_FILE}", props))
        registration = Registration.from_json(_read_text(f"{folder}/{REGISTRATION_FILE}", props))
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"release {rid} of {model} has no complete record: {exc}. The training Job "
            f"train-{rid} did not finish it; see `kubectl logs job/train-{rid}`"
        ) from None
    for record, found in ((RELEASE_FILE, metadata.release_id), (REGISTRATION_FILE, registration.release_id)):
        if found != rid:
            raise RuntimeError(f"{folder}/{record} records release {found}, expected {rid}")
    if registration.model_name != model:
        raise RuntimeError(
            f"{folder}/{REGISTRATION_FILE} registers {registration.model_name}, expected {model}"
        )
    return {
        "model_sha256": metadata.model_sha256,
        "gates_passed": metadata.gates_passed,
        "model_version": registration.version,
        "metadata_json": json.dumps({"metrics": metadata.metrics}, sort_keys=True),
    }


class ReleaseRecord(pulumi.dynamic.Resource):
    """The checksum, gate result and registered version of a trained release."""

    model_sha256: pulumi.Output[str]
    gates_passed: pulumi.Output[bool]
    model_version: pulumi.Output[str]
    release_uri: pulumi.Output[str]

    def __init__(
        self, name: str, args: ReleaseRecordArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        secret = pulumi.Output.secret
        super().__init__(
            ReleaseRecordProvider(),
            name,
            {
                "release_uri": args.release_uri,
                "model_name": args.model_name,
                "release_id": args.release_id,
                "endpoint_url": args.endpoint_url,
                "access_key_id": secret(args.access_key_id) if args.access_key_id is not None else None,
                "secret_access_key": secret(args.secret_access_key)
                if args.secret_access_key is not None
                else None,
                "model_sha256": None,
                "gates_passed": None,
                "model_version": None,
                "metadata_json": None,
                "mlops_kind": None,
            },
            opts,
        )
