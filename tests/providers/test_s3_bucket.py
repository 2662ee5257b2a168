"""S3BucketProvider against a real SeaweedFS (the shared `s3` session fixture), and S3Bucket under mocks."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.providers.s3_bucket import (
    MLOPS_KIND,
    S3Bucket,
    S3BucketArgs,
    S3BucketError,
    S3BucketProvider,
)
from tests import services
from tests.services import S3Service

pytestmark = [pytest.mark.integration]


def _props(s3: S3Service, bucket: str, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "bucket_name": bucket,
        "endpoint_url": s3.endpoint_url,
        "region": s3.region,
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
        "versioning": True,
        "block_public_access": True,
        "force_destroy": False,
        "mlops_kind": MLOPS_KIND,
    }
    props.update(overrides)
    return props


def _name(prefix: str = "art") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _exists(s3: S3Service, bucket: str) -> bool:
    return any(b["Name"] == bucket for b in s3.client().list_buckets().get("Buckets", []))


def test_create_makes_versioned_private_bucket(s3: S3Service) -> None:
    bucket = _name()
    result = S3BucketProvider().create(_props(s3, bucket))
    assert result.id == bucket
    outs = result.outs or {}
    assert outs["uri"] == f"s3://{bucket}"
    assert outs["mlops_kind"] == "s3-bucket"
    assert outs["versioning"] is True
    assert outs["adopted"] is False
    # SeaweedFS answers PutPublicAccessBlock with 501 NotImplemented: the provider checked the
    # ACL and policy instead and says so, rather than claiming a block it could not set.
    assert outs["block_public_access"] is True
    assert outs["public_access_enforcement"] == "verified-private"
    client = s3.client()
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    S3BucketProvider().delete(bucket, outs)
    assert not _exists(s3, bucket)


def test_create_adopts_existing_bucket_and_delete_keeps_it(s3: S3Service) -> None:
    bucket = s3.make_bucket("adopt")
    s3.client().put_object(Bucket=bucket, Key="keep.txt", Body=b"data")
    outs = S3BucketProvider().create(_props(s3, bucket)).outs or {}
    assert outs["adopted"] is True
    assert s3.client().get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    S3BucketProvider().delete(bucket, outs)
    assert s3.client().get_object(Bucket=bucket, Key="keep.txt")["Body"].read() == b"data"


def test_create_refuses_public_bucket_on_store_without_public_access_block(s3: S3Service) -> None:
    bucket = s3.make_bucket("public")
    s3.client().put_bucket_acl(Bucket=bucket, ACL="public-read")
    with pytest.raises(S3BucketError) as err:
        S3BucketProvider().create(_props(s3, bucket))
    message = str(err.value)
    assert bucket in message and s3.endpoint_url in message
    assert "PutPublicAccessBlock" in message and "AllUsers" in message
    # Not blocking public access is allowed when asked for explicitly.
    outs = S3BucketProvider().create(_props(s3, bucket, block_public_access=False)).outs or {}
    assert outs["block_public_access"] is False and outs["public_access_enforcement"] == "none"


def test_create_with_bad_credentials_names_bucket_and_endpoint(s3: S3Service) -> None:
    bucket = _name("badcreds")
    with pytest.raises(S3BucketError) as err:
        S3BucketProvider().create(_props(s3, bucket, secret_access_key="wrong-secret"))
    message = str(err.value)
    assert bucket in message and s3.endpoint_url in message and "access_key" in message
    assert not _exists(s3, bucket)


def test_create_rejects_half_given_credentials(s3: S3Service) -> None:
    with pytest.raises(S3BucketError, match="must be given together"):
        S3BucketProvider().create(_props(s3, _name(), secret_access_key=None))


def test_read_reports_live_state_and_missing_bucket(s3: S3Service) -> None:
    bucket = _name("read")
    provider = S3BucketProvider()
    outs = provider.create(_props(s3, bucket)).outs or {}
    live = provider.read(bucket, outs)
    assert live.id == bucket and live.outs == outs
    # Drift made outside Pulumi shows up on refresh.
    s3.client().put_bucket_acl(Bucket=bucket, ACL="public-read")
    drifted = provider.read(bucket, outs).outs or {}
    assert drifted["block_public_access"] is False and drifted["public_access_enforcement"] == "none"
    s3.client().put_bucket_acl(Bucket=bucket, ACL="private")
    provider.delete(bucket, outs)
    gone = provider.read(bucket, outs)
    assert gone.id == "" and gone.outs == {}


def test_diff_replaces_on_identity_and_updates_in_place_otherwise(s3: S3Service) -> None:
    provider = S3BucketProvider()
    old = _props(s3, "bucket-a")
    assert provider.diff("bucket-a", old, dict(old)).changes is False

    renamed = provider.diff("bucket-a", old, {**old, "bucket_name": "bucket-b"})
    assert renamed.changes and renamed.replaces == ["bucket_name"]
    assert renamed.delete_before_replace is False

    moved = provider.diff(
        "bucket-a", old, {**old, "endpoint_url": "http://127.0.0.1:1", "region": "eu-west-1"}
    )
    assert moved.replaces == ["endpoint_url", "region"]
    assert moved.delete_before_replace is True  # same name: cannot coexist with the old one

    for key, value in (("versioning", False), ("block_public_access", False), ("force_destroy", True)):
        in_place = provider.diff("bucket-a", old, {**old, key: value})
        assert in_place.changes is True and in_place.replaces == [], key

    # None and "" mean the same endpoint (AWS); defaults fill missing keys.
    aws = {"bucket_name": "bucket-a", "endpoint_url": None}
    assert provider.diff("bucket-a", aws, {**aws, "endpoint_url": "", "region": "us-east-1"}).changes is False


def test_update_toggles_versioning_and_public_access(s3: S3Service) -> None:
    bucket = _name("update")
    provider = S3BucketProvider()
    client = s3.client()
    outs = provider.create(_props(s3, bucket)).outs or {}

    suspended = provider.update(bucket, outs, _props(s3, bucket, versioning=False)).outs or {}
    assert suspended["versioning"] is False
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"

    open_ = provider.update(bucket, suspended, _props(s3, bucket, block_public_access=False)).outs or {}
    assert open_["block_public_access"] is False and open_["versioning"] is True
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    closed = provider.update(bucket, open_, _props(s3, bucket)).outs or {}
    assert closed["block_public_access"] is True
    assert closed["public_access_enforcement"] == "verified-private"

    client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    with pytest.raises(S3BucketError, match=bucket):
        provider.update(bucket, closed, _props(s3, bucket))
    client.put_bucket_acl(Bucket=bucket, ACL="private")
    provider.delete(bucket, closed)


def test_update_of_vanished_bucket_says_refresh(s3: S3Service) -> None:
    bucket = _name("vanish")
    with pytest.raises(S3BucketError, match="pulumi refresh"):
        S3BucketProvider().update(bucket, _props(s3, bucket), _props(s3, bucket, versioning=False))


def test_delete_refuses_non_empty_bucket_unless_force_destroy(s3: S3Service) -> None:
    bucket = _name("delete")
    provider = S3BucketProvider()
    client = s3.client()
    outs = provider.create(_props(s3, bucket)).outs or {}
    client.put_object(Bucket=bucket, Key="model.pkl", Body=b"v1")
    client.put_object(Bucket=bucket, Key="model.pkl", Body=b"v2")
    client.delete_object(Bucket=bucket, Key="model.pkl")  # only versions + a delete marker remain

    with pytest.raises(S3BucketError) as err:
        provider.delete(bucket, outs)
    assert "non-empty" in str(err.value) and bucket in str(err.value) and "force_destroy" in str(err.value)
    assert _exists(s3, bucket)

    provider.delete(bucket, {**outs, "force_destroy": True})
    assert not _exists(s3, bucket)
    provider.delete(bucket, outs)  # already gone: nothing to do


def test_check_rejects_invalid_bucket_name() -> None:
    result = S3BucketProvider().check({}, {"bucket_name": "Bad_Name"})
    assert [f.property for f in result.failures] == ["bucket_name"]
    assert "Bad_Name" in result.failures[0].reason
    assert S3BucketProvider().check({}, {"bucket_name": "good-name"}).failures == []


def test_provider_pickles_without_credentials() -> None:
    from pulumi.dynamic.dynamic import serialize_provider

    # Pickled by reference to the installed module (the repo is installed with `-e .`), with no state.
    blob = base64.b64decode(serialize_provider(S3BucketProvider()))
    assert b"components.providers.s3_bucket" in blob and b"S3BucketProvider" in blob
    assert len(blob) < 300


# ---- the resource under Pulumi's mocks ----


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registered.append(args)
        outs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            outs.update(
                uri=f"s3://{outs['bucket_name']}",
                public_access_enforcement="public-access-block",
                adopted=False,
            )
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@pytest.fixture
def mocks() -> Any:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="mlops", stack="test", preview=False)
    yield mocks
    pulumi.runtime.settings.reset_options()


@pulumi.runtime.test
def test_resource_registers_with_credentials_secret(mocks: _Mocks) -> Any:
    bucket = S3Bucket(
        "artifacts-mocked",
        S3BucketArgs(
            bucket_name="mlops-artifacts",
            endpoint_url="http://seaweedfs:8333",
            access_key_id="AKIAEXAMPLE",
            secret_access_key="super-secret-value",
        ),
    )

    def check(values: list[Any]) -> None:
        name, uri, versioning, blocked, key_secret, secret_secret, name_secret = values
        assert (name, uri, versioning, blocked) == ("mlops-artifacts", "s3://mlops-artifacts", True, True)
        assert key_secret is True and secret_secret is True and name_secret is False
        [registered] = [r for r in mocks.registered if r.name == "artifacts-mocked"]
        assert registered.typ == "pulumi-python:dynamic:Resource"
        assert registered.inputs["mlops_kind"] == "s3-bucket"
        assert registered.inputs["versioning"] is True and registered.inputs["block_public_access"] is True
        # the serialized provider captured no credential
        provider_blob = base64.b64decode(registered.inputs["__provider"])
        assert b"super-secret-value" not in provider_blob and b"AKIAEXAMPLE" not in provider_blob

    return pulumi.Output.all(
        bucket.bucket_name,
        bucket.uri,
        bucket.versioning,
        bucket.block_public_access,
        getattr(bucket, "access_key_id").is_secret(),  # noqa: B009 (set by the engine, not declared)
        getattr(bucket, "secret_access_key").is_secret(),  # noqa: B009
        bucket.bucket_name.is_secret(),
    ).apply(check)


# ---- default encryption and the TLS-only policy, against real SeaweedFS ----


def test_encryption_unsupported_store_is_reported_and_left_writable(s3: S3Service) -> None:
    # The shared store has no key-encryption key: it accepts PutBucketEncryption, then fails
    # every write with 500. The provider finds that out with a probe and undoes the setting.
    bucket = _name("sse")
    provider = S3BucketProvider()
    outs = provider.create(_props(s3, bucket, encryption="AES256")).outs or {}
    assert outs["encryption"] == "AES256" and outs["encryption_enforcement"] == "unsupported"
    client = s3.client()
    with pytest.raises(Exception, match="ServerSideEncryptionConfigurationNotFound"):
        client.get_bucket_encryption(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="model.pkl", Body=b"v1")  # still writable
    assert [v["Key"] for v in client.list_object_versions(Bucket=bucket).get("Versions", [])] == ["model.pkl"]
    # Refresh keeps the finding: no drift, so no update on every `pulumi up`.
    assert provider.read(bucket, outs).outs == outs
    assert provider.diff(bucket, outs, _props(s3, bucket, encryption="AES256")).changes is False
    provider.delete(bucket, {**outs, "force_destroy": True})


def test_tls_only_is_refused_over_plain_http(s3: S3Service) -> None:
    bucket = _name("tls")
    provider = S3BucketProvider()
    failures = provider.check({}, _props(s3, bucket, tls_only=True)).failures
    assert [f.property for f in failures] == ["tls_only"]
    assert s3.endpoint_url in failures[0].reason and "https://" in failures[0].reason
    with pytest.raises(S3BucketError, match="locks the stack out"):
        provider.create(_props(s3, bucket, tls_only=True))
    assert not _exists(s3, bucket)
    bad = provider.check({}, _props(s3, bucket, encryption="aws:kms")).failures
    assert [f.property for f in bad] == ["encryption"] and "'AES256', 'none'" in bad[0].reason


@dataclass
class SecureStore:
    """A SeaweedFS that can encrypt (a key-encryption key) and serves S3 over TLS too."""

    service: S3Service
    https_url: str
    ca_bundle: Path

    def https_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.https_url,
            aws_access_key_id=self.service.access_key,
            aws_secret_access_key=self.service.secret_key,
            region_name=self.service.region,
            verify=str(self.ca_bundle),
        )


@pytest.fixture(scope="module")
def secure_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStore]:
    work = tmp_path_factory.mktemp("seaweedfs-tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    https_port = services.free_port()
    tls_args = [f"-s3.cert.file={cert}", f"-s3.key.file={key}", f"-s3.port.https={https_port}"]

    class TlsProcess(services.ManagedProcess):  # start_seaweedfs's process, with TLS flags
        def __init__(self, name: str, argv: list[str], *args: Any, **kwargs: Any) -> None:
            super().__init__(name, [*argv, *tls_args], *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "ManagedProcess", TlsProcess)
        patch.setenv("WEED_S3_SSE_KEY", secrets.token_hex(32))  # SSE-S3's key-encryption key
        service = services.start_seaweedfs(work / "store")
    try:
        yield SecureStore(service, f"https://127.0.0.1:{https_port}", cert)
    finally:
        service.stop()


@pytest.fixture
def secure(secure_store: SecureStore, monkeypatch: pytest.MonkeyPatch) -> SecureStore:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(secure_store.ca_bundle))  # the provider's boto3 trusts it
    return secure_store


def _secure_props(store: SecureStore, bucket: str, **overrides: Any) -> dict[str, Any]:
    return _props(store.service, bucket, endpoint_url=store.https_url, **overrides)


def test_encrypted_tls_only_bucket_on_seaweedfs(secure: SecureStore) -> None:
    bucket = _name("secure")
    provider = S3BucketProvider()
    outs = provider.create(_secure_props(secure, bucket, encryption="AES256", tls_only=True)).outs or {}
    assert outs["encryption_enforcement"] == "sse-s3" and outs["encryption"] == "AES256"
    assert outs["tls_enforcement"] == "bucket-policy" and outs["tls_only"] is True
    assert outs["public_access_enforcement"] == "verified-private"  # the Deny statement is not public

    https = secure.https_client()
    written = https.put_object(Bucket=bucket, Key="model.pkl", Body=b"weights")
    assert written["ServerSideEncryption"] == "AES256"
    assert https.get_object(Bucket=bucket, Key="model.pkl")["Body"].read() == b"weights"
    # The store enforces the policy: plain HTTP is denied, the owner's keys included.
    with pytest.raises(Exception, match="AccessDenied"):
        secure.service.client().get_object(Bucket=bucket, Key="model.pkl")
    # The probe object left nothing behind: only the one version written above.
    assert [v["Key"] for v in https.list_object_versions(Bucket=bucket).get("Versions", [])] == ["model.pkl"]

    assert provider.read(bucket, outs).outs == outs
    https.delete_bucket_policy(Bucket=bucket)  # drift, made outside Pulumi
    drifted = provider.read(bucket, outs).outs or {}
    assert drifted["tls_only"] is False and drifted["tls_enforcement"] == "none"
    assert provider.diff(bucket, drifted, _secure_props(secure, bucket, tls_only=True)).changes is True
    restored = provider.update(
        bucket, drifted, _secure_props(secure, bucket, encryption="AES256", tls_only=True)
    )
    assert (restored.outs or {})["tls_enforcement"] == "bucket-policy"
    provider.delete(bucket, {**(restored.outs or {}), "force_destroy": True})
    assert bucket not in {b["Name"] for b in https.list_buckets()["Buckets"]}


def _sids(client: Any, bucket: str) -> list[str]:
    return [st["Sid"] for st in json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]]


def test_tls_only_keeps_other_policy_statements_and_can_be_turned_off(secure: SecureStore) -> None:
    bucket = _name("policy")
    https = secure.https_client()
    https.create_bucket(Bucket=bucket)
    theirs = {
        "Sid": "TheirsDenyDeletes",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }
    https.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]})
    )
    provider = S3BucketProvider()
    outs = provider.create(_secure_props(secure, bucket, tls_only=True)).outs or {}
    assert outs["adopted"] is True and outs["tls_enforcement"] == "bucket-policy"
    assert _sids(https, bucket) == ["TheirsDenyDeletes", "MlopsDenyInsecureTransport"]

    off = provider.update(bucket, outs, _secure_props(secure, bucket, tls_only=False)).outs or {}
    assert off["tls_only"] is False and off["tls_enforcement"] == "none"
    assert _sids(https, bucket) == ["TheirsDenyDeletes"]
    secure.service.client().list_objects_v2(Bucket=bucket)  # plain HTTP works again
