"""ReleaseRecord: what a finished training Job left behind, read back for the serving rollout.

A Kubernetes Job reports only success or failure, while serving needs the model checksum and
the registered version. This dynamic provider reads `<release_uri>/release.json` from the
artifact store (boto3, the same endpoint and credentials that manage the bucket) and, when an
MLflow URL reachable from where `pulumi up` runs is given, the model version registered for the
release. It is created after the Job completes and replaced with each new release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

__all__ = ["ReleaseRecord", "ReleaseRecordArgs", "ReleaseRecordProvider"]

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
    tracking_uri: pulumi.Input[str] | None = None
    """MLflow URL reachable from where `pulumi up` runs; None leaves model_version 'unresolved'."""


class ReleaseRecordProvider(pulumi.dynamic.ResourceProvider):
    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        outs = {**props, **_read(props), "mlops_kind": MLOPS_KIND}
        return pulumi.dynamic.CreateResult(id_=f"{props['model_name']}/{props['release_id']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        keys = ("release_uri", "model_name", "release_id", "endpoint_url", "tracking_uri")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_=id_, outs={**props, **_read(props)})


def _read(props: dict[str, Any]) -> dict[str, Any]:
    from model.artifact import RELEASE_FILE, ReleaseMetadata

    uri = str(props["release_uri"]).rstrip("/") + "/" + RELEASE_FILE
    if uri.startswith("s3://"):
        import boto3

        bucket, _, key = uri.removeprefix("s3://").partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=props.get("endpoint_url") or None,
            aws_access_key_id=props.get("access_key_id") or None,
            aws_secret_access_key=props.get("secret_access_key") or None,
        )
        text = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    else:
        with open(uri.removeprefix("file://"), encoding="utf-8") as handle:
            text = handle.read()
    metadata = ReleaseMetadata.from_json(text)
    if metadata.release_id != props["release_id"]:
        raise ValueError(f"{uri} records release {metadata.release_id}, expected {props['release_id']}")
    version = "unresolved"
    if props.get("tracking_uri"):
        from model.registry import connect, find_release
        from model.spec import RegistrySettings

        client = connect(RegistrySettings(tracking_uri=props["tracking_uri"]))
        found = find_release(client, str(props["model_name"]), str(props["release_id"]))
        if found is None:
            raise ValueError(f"release {props['release_id']} of {props['model_name']} is not registered")
        version = str(found.version)
    return {
        "model_sha256": metadata.model_sha256,
        "gates_passed": metadata.gates_passed,
        "model_version": version,
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
                "tracking_uri": args.tracking_uri,
                "model_sha256": None,
                "gates_passed": None,
                "model_version": None,
                "metadata_json": None,
                "mlops_kind": None,
            },
            opts,
        )
