"""`S3Bucket`: the artifact bucket on any S3 API (AWS S3, MinIO, SeaweedFS), through boto3.

A `pulumi.dynamic` resource. It creates the bucket (or adopts one the credentials already own),
turns versioning on, blocks public access, sets default server-side encryption and, asked to,
a TLS-only bucket policy. The provider is pickled with its closure by the
engine and unpickled in the dynamic-provider process, so `S3BucketProvider` keeps every helper
on the class and imports boto3 inside its methods.

Public access on stores without PutPublicAccessBlock
-----------------------------------------------------
AWS S3 (and MinIO) implement the PublicAccessBlock API; SeaweedFS answers `501 NotImplemented`
to Put/Get/DeletePublicAccessBlock. The provider never pretends the block is in place:

* the block is applied when the store implements it: `public_access_enforcement` is
  `"public-access-block"`;
* on a non-AWS endpoint that answers NotImplemented, the provider reads the bucket ACL and the
  bucket policy and fails loudly if either grants access to everyone (AllUsers /
  AuthenticatedUsers grant, or an Allow statement for principal `*`); when both are private it
  records `public_access_enforcement = "verified-private"`. That is a check at apply/refresh
  time, not a guard against a later change: `pulumi refresh` re-checks and shows the drift;
* on AWS itself NotImplemented is an error.

Encryption and TLS-only, where the store supports them
-------------------------------------------------------
`encryption="AES256"` sets the bucket's default encryption (SSE-S3) and reads it back; an
existing SSE-KMS default is kept (it is at least as strong). Accepting the setting is not proof:
SeaweedFS without a key-encryption key (`s3.sse.kek` / `WEED_S3_SSE_KEY`) stores the setting and
then fails every write with 500 InternalError. So on non-AWS stores the provider also writes a
probe object and checks the store reports it encrypted (then removes every version of it). A store
that cannot encrypt (NotImplemented, as MinIO answers without a KMS, or the probe failing) gets its
setting reverted and `encryption_enforcement = "unsupported"`, with a warning; on AWS that is an
error. `encryption="none"` sets nothing and removes nothing.

`tls_only=True` adds one statement (Sid `MlopsDenyInsecureTransport`) to the bucket policy,
keeping the others: Deny `s3:*` when `aws:SecureTransport` is false; it is read back
(`tls_enforcement = "bucket-policy"`). SeaweedFS enforces it: over plain HTTP even the owner's
requests are denied, deleting the policy included, so `tls_only` is refused with an http://
endpoint. A store without bucket policies (NotImplemented) records `"unsupported"` (AWS: error).

Deleting
--------
S3 normally refuses to delete a non-empty bucket, but SeaweedFS deletes one with objects and
versions in it without complaint, so the provider counts object versions itself and refuses
unless `force_destroy`; with `force_destroy` it deletes every version and delete marker first.
A bucket that existed before (adopted, `adopted = True`) is left in place on delete: Pulumi
only stops managing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import pulumi
import pulumi.dynamic

__all__ = ["S3Bucket", "S3BucketArgs", "S3BucketError", "S3BucketProvider"]

MLOPS_KIND = "s3-bucket"
"""Value of the `mlops_kind` state property; the policy pack finds the bucket by it."""

SECRET_PROPS = ("access_key_id", "secret_access_key")

IN_PLACE_PROPS = ("versioning", "block_public_access", "force_destroy", "encryption", "tls_only")
"""Settings an update changes on the live bucket; the name, endpoint and region replace it."""

Encryption = Literal["AES256", "none"]
ENCRYPTIONS: tuple[str, ...] = get_args(Encryption)


class S3BucketError(RuntimeError):
    """A bucket operation failed; the message names the bucket, the endpoint and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class S3BucketArgs:
    bucket_name: pulumi.Input[str]
    """Bucket name (3-63 chars: lowercase letters, digits, dots, hyphens). Changing it replaces the bucket."""

    endpoint_url: pulumi.Input[str] | None = None
    """S3 API endpoint, e.g. `http://minio:9000`; None means AWS S3. Changing it replaces the bucket."""

    region: pulumi.Input[str] = "us-east-1"
    """Region of the bucket (sent as LocationConstraint outside us-east-1). Changing it replaces."""

    access_key_id: pulumi.Input[str] | None = None
    """Access key id; None uses boto3's default credential chain. Kept secret in state."""

    secret_access_key: pulumi.Input[str] | None = None
    """Secret access key paired with `access_key_id`. Kept secret in state."""

    versioning: bool = True
    """Keep every object version (S3 can only suspend versioning once enabled, not remove it)."""

    block_public_access: bool = True
    """Block public ACLs and policies (or, on stores without that API, verify there are none)."""

    force_destroy: bool = False
    """On delete, remove every object version first; otherwise deleting a non-empty bucket fails."""

    encryption: Encryption = "AES256"
    """Default server-side encryption: "AES256" (SSE-S3; an existing SSE-KMS default is kept) or
    "none" (set nothing, remove nothing). See `encryption_enforcement` for what holds."""

    tls_only: bool = False
    """Deny every request not made over TLS (bucket policy). Refused with an http:// endpoint: the
    policy would deny Pulumi's own requests too."""


class S3BucketProvider(pulumi.dynamic.ResourceProvider):
    """CRUD for one bucket. Self-contained: the engine pickles it; boto3 is imported in methods."""

    # Only a secret if it captured secrets: it captures nothing (credentials travel as props).
    serialize_as_secret_always = False

    _SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
    _SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
    _PUBLIC_GROUPS = (
        "http://acs.amazonaws.com/groups/global/AllUsers",
        "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
    )
    _TLS_SID = "MlopsDenyInsecureTransport"
    _PROBE_KEY = ".mlops/encryption-probe"
    _SSE_MODES = {"AES256": "sse-s3", "aws:kms": "sse-kms", "aws:kms:dsse": "sse-kms"}

    # ---- helpers (methods, so the pickled provider carries them) ----

    @classmethod
    def _plain(cls, value: Any) -> Any:
        """Unwrap an RPC secret; the engine strips them for dynamic providers, but be safe."""
        if isinstance(value, dict) and value.get(cls._SECRET_SIG_KEY) == cls._SECRET_SIG:
            return value.get("value")
        return value

    @classmethod
    def _settings(cls, props: dict[str, Any]) -> dict[str, Any]:
        p = {k: cls._plain(v) for k, v in props.items()}
        return {
            "bucket_name": p.get("bucket_name"),
            "endpoint_url": p.get("endpoint_url") or None,
            "region": p.get("region") or "us-east-1",
            "access_key_id": p.get("access_key_id") or None,
            "secret_access_key": p.get("secret_access_key") or None,
            "versioning": p.get("versioning", True) is not False,
            "block_public_access": p.get("block_public_access", True) is not False,
            "force_destroy": p.get("force_destroy", False) is True,
            # State written before these settings existed holds neither: the bucket has none.
            "encryption": p.get("encryption") or "none",
            "tls_only": p.get("tls_only", False) is True,
            "adopted": p.get("adopted", False) is True,
            # What the last apply found (read keeps a store's "unsupported" steady).
            "encryption_enforcement": p.get("encryption_enforcement") or "none",
            "tls_enforcement": p.get("tls_enforcement") or "none",
        }

    @staticmethod
    def _where(s: dict[str, Any]) -> str:
        endpoint = s["endpoint_url"] or f"AWS S3 ({s['region']})"
        return f"bucket '{s['bucket_name']}' at {endpoint}"

    @staticmethod
    def _is_aws(s: dict[str, Any]) -> bool:
        endpoint = s["endpoint_url"]
        return endpoint is None or "amazonaws.com" in str(endpoint)

    @staticmethod
    def _setting_problem(s: dict[str, Any]) -> tuple[str, str] | None:
        """(property, why) for a setting the provider must refuse before touching the store."""
        if s["encryption"] not in ENCRYPTIONS:
            return "encryption", f"encryption {s['encryption']!r} is not one of {list(ENCRYPTIONS)}"
        if s["tls_only"] and str(s["endpoint_url"] or "https://").lower().startswith("http://"):
            return "tls_only", (
                f"tls_only needs an https:// endpoint, got {s['endpoint_url']!r}: the TLS-only bucket "
                "policy denies every plain-HTTP request, this provider's and the pods' included (on "
                "SeaweedFS even deleting the policy), which locks the stack out of its bucket. Serve "
                "the S3 API over TLS, or set tls_only to false"
            )
        return None

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    @staticmethod
    def _status(exc: Exception) -> int:
        response = getattr(exc, "response", None) or {}
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)

    def _client(self, s: dict[str, Any], attempts: int = 3) -> Any:
        import boto3
        from botocore.config import Config

        if bool(s["access_key_id"]) != bool(s["secret_access_key"]):
            raise S3BucketError(
                f"{self._where(s)}: access_key_id and secret_access_key must be given together "
                "(or neither, to use boto3's default credential chain)"
            )
        return boto3.client(
            "s3",
            endpoint_url=s["endpoint_url"],
            region_name=s["region"],
            aws_access_key_id=s["access_key_id"],
            aws_secret_access_key=s["secret_access_key"],
            config=Config(
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                # path-style works on every S3-compatible store; AWS keeps virtual-host style.
                s3={"addressing_style": "auto" if self._is_aws(s) else "path"},
            ),
        )

    def _unsupported(self, s: dict[str, Any], exc: Exception) -> bool:
        """The store does not implement the call (never excused on AWS itself)."""
        return not self._is_aws(s) and (self._code(exc) == "NotImplemented" or self._status(exc) == 501)

    def _fail(self, s: dict[str, Any], action: str, exc: Exception) -> S3BucketError:
        code = self._code(exc) or type(exc).__name__
        hint = ""
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            hint = " Check access_key_id/secret_access_key and the identity's permissions."
        return S3BucketError(f"{self._where(s)}: {action} failed ({code}: {exc}).{hint}")

    def _exists(self, client: Any, s: dict[str, Any]) -> bool:
        try:
            client.head_bucket(Bucket=s["bucket_name"])
            return True
        except Exception as exc:
            if self._status(exc) == 404 or self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            if self._status(exc) == 403:
                # HEAD has no error body: tell bad credentials apart from someone else's bucket.
                try:
                    client.list_buckets()
                except Exception as auth:
                    raise self._fail(s, "authenticating (ListBuckets)", auth) from auth
                raise S3BucketError(
                    f"{self._where(s)}: the bucket exists but these credentials cannot access it "
                    "(HTTP 403); bucket names are global on AWS, pick another name or use the owner's keys"
                ) from exc
            raise self._fail(s, "HeadBucket", exc) from exc

    def _versioning_enabled(self, client: Any, s: dict[str, Any]) -> bool:
        try:
            status = client.get_bucket_versioning(Bucket=s["bucket_name"]).get("Status")
        except Exception as exc:
            raise self._fail(s, "GetBucketVersioning", exc) from exc
        return status == "Enabled"

    def _apply_versioning(self, client: Any, s: dict[str, Any]) -> bool:
        enabled = self._versioning_enabled(client, s)
        # S3 cannot turn versioning off once on, only suspend it; never-enabled stays unversioned.
        target = "Enabled" if s["versioning"] else ("Suspended" if enabled else None)
        if target is not None:
            try:
                client.put_bucket_versioning(
                    Bucket=s["bucket_name"], VersioningConfiguration={"Status": target}
                )
            except Exception as exc:
                raise self._fail(s, f"PutBucketVersioning({target})", exc) from exc
        enabled = self._versioning_enabled(client, s)
        if enabled != s["versioning"]:
            raise S3BucketError(
                f"{self._where(s)}: versioning is {'on' if enabled else 'off'} after setting it "
                f"{'on' if s['versioning'] else 'off'}; the store did not apply the change"
            )
        return enabled

    def _public_exposure(self, client: Any, s: dict[str, Any]) -> list[str]:
        """What makes the bucket public: ACL grants to everyone, Allow statements for `*`."""
        import json

        found: list[str] = []
        try:
            grants = client.get_bucket_acl(Bucket=s["bucket_name"]).get("Grants", [])
        except Exception as exc:
            raise self._fail(s, "GetBucketAcl", exc) from exc
        for grant in grants:
            uri = grant.get("Grantee", {}).get("URI")
            if uri in self._PUBLIC_GROUPS:
                found.append(f"ACL grants {grant.get('Permission')} to {uri.rsplit('/', 1)[-1]}")
        try:
            raw = client.get_bucket_policy(Bucket=s["bucket_name"]).get("Policy") or "{}"
        except Exception as exc:
            if self._code(exc) != "NoSuchBucketPolicy":
                raise self._fail(s, "GetBucketPolicy", exc) from exc
            raw = "{}"
        statements = json.loads(raw).get("Statement", [])
        for st in statements if isinstance(statements, list) else [statements]:
            principal = st.get("Principal")
            aws = principal.get("AWS") if isinstance(principal, dict) else None
            everyone = "*" in (principal, aws) or (isinstance(aws, list) and "*" in aws)
            if st.get("Effect") == "Allow" and everyone:
                found.append(f"bucket policy allows {st.get('Action')} to principal '*'")
        return found

    def _apply_public_access(self, client: Any, s: dict[str, Any]) -> tuple[bool, str]:
        """Returns (block_public_access as actually guaranteed, enforcement mode)."""
        flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
        if not s["block_public_access"]:
            try:
                client.delete_public_access_block(Bucket=s["bucket_name"])
            except Exception as exc:
                if self._code(exc) not in ("NotImplemented", "NoSuchPublicAccessBlockConfiguration"):
                    raise self._fail(s, "DeletePublicAccessBlock", exc) from exc
            return False, "none"
        try:
            client.put_public_access_block(
                Bucket=s["bucket_name"],
                PublicAccessBlockConfiguration=dict.fromkeys(flags, True),
            )
            return True, "public-access-block"
        except Exception as exc:
            if self._code(exc) != "NotImplemented" or self._is_aws(s):
                raise self._fail(s, "PutPublicAccessBlock", exc) from exc
        exposure = self._public_exposure(client, s)
        if exposure:
            raise S3BucketError(
                f"{self._where(s)}: block_public_access is requested but this store does not implement "
                f"PutPublicAccessBlock and the bucket is public: {'; '.join(exposure)}. Remove the "
                "public grant/policy (e.g. `aws s3api put-bucket-acl --acl private`, "
                "`aws s3api delete-bucket-policy`) or set block_public_access=False."
            )
        return True, "verified-private"

    def _live_public_access(self, client: Any, s: dict[str, Any]) -> tuple[bool, str]:
        try:
            conf = client.get_public_access_block(Bucket=s["bucket_name"])
            flags = conf.get("PublicAccessBlockConfiguration", {})
            blocked = bool(flags) and all(flags.values())
            return blocked, "public-access-block" if blocked else "none"
        except Exception as exc:
            code = self._code(exc)
            if code == "NoSuchPublicAccessBlockConfiguration":
                return False, "none"
            if code != "NotImplemented" or self._is_aws(s):
                raise self._fail(s, "GetPublicAccessBlock", exc) from exc
        if not s["block_public_access"]:
            return False, "none"
        private = not self._public_exposure(client, s)
        return private, "verified-private" if private else "none"

    # ---- default encryption ----

    def _live_encryption(self, client: Any, s: dict[str, Any]) -> str | None:
        """The bucket's default encryption algorithm; None without one (or without the API)."""
        try:
            conf = client.get_bucket_encryption(Bucket=s["bucket_name"])
        except Exception as exc:
            missing = self._code(exc) == "ServerSideEncryptionConfigurationNotFoundError"
            if missing or self._unsupported(s, exc):
                return None
            raise self._fail(s, "GetBucketEncryption", exc) from exc
        for rule in conf.get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
            algorithm = rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
            if algorithm:
                return str(algorithm)
        return None

    def _encrypts_writes(self, s: dict[str, Any]) -> bool:
        """Write a probe object and see whether the store says it encrypted it; remove it again."""
        client = self._client(s, attempts=1)  # a store that cannot encrypt answers 500: no retries
        try:
            put = client.put_object(Bucket=s["bucket_name"], Key=self._PROBE_KEY, Body=b"")
        except Exception as exc:
            if self._status(exc) >= 500:
                return False
            raise self._fail(s, "PutObject (encryption probe)", exc) from exc
        items = [v for v in self._versions(client, s, self._PROBE_KEY) if v["Key"] == self._PROBE_KEY]
        self._delete_items(client, s, items)
        return put.get("ServerSideEncryption") in self._SSE_MODES

    def _apply_encryption(self, client: Any, s: dict[str, Any]) -> tuple[str, str]:
        """Returns (encryption as requested, enforcement mode)."""
        live = self._live_encryption(client, s)
        if s["encryption"] == "none":
            return "none", self._SSE_MODES.get(live or "", "none")
        changed = live is None
        if changed:
            rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": s["encryption"]}}
            try:
                client.put_bucket_encryption(
                    Bucket=s["bucket_name"], ServerSideEncryptionConfiguration={"Rules": [rule]}
                )
            except Exception as exc:
                if not self._unsupported(s, exc):
                    raise self._fail(s, f"PutBucketEncryption({s['encryption']})", exc) from exc
                return self._unencrypted(s, "answers NotImplemented to PutBucketEncryption")
            live = self._live_encryption(client, s)
        if live is None:
            if self._is_aws(s):
                raise S3BucketError(f"{self._where(s)}: no default encryption after PutBucketEncryption")
            return self._unencrypted(s, "accepted PutBucketEncryption but does not report it")
        if not self._is_aws(s) and not self._encrypts_writes(s):
            if changed:
                try:
                    client.delete_bucket_encryption(Bucket=s["bucket_name"])  # writes work again
                except Exception as exc:
                    raise self._fail(s, "DeleteBucketEncryption (revert)", exc) from exc
            return self._unencrypted(s, "cannot encrypt writes (SeaweedFS: no s3.sse.kek configured)")
        return s["encryption"], self._SSE_MODES.get(live, "sse-s3")

    def _unencrypted(self, s: dict[str, Any], why: str) -> tuple[str, str]:
        pulumi.log.warn(
            f"{self._where(s)}: encryption {s['encryption']} requested, but this store {why}; objects "
            "are stored unencrypted (encryption_enforcement=unsupported). Enable server-side "
            "encryption on the store, or set encryption to none to silence this"
        )
        return s["encryption"], "unsupported"

    def _live_encryption_state(self, client: Any, s: dict[str, Any]) -> tuple[str, str]:
        live = self._live_encryption(client, s)
        if live is not None:
            return s["encryption"], self._SSE_MODES.get(live, "sse-s3")
        if s["encryption"] != "none" and s["encryption_enforcement"] == "unsupported":
            return s["encryption"], "unsupported"  # as found at apply time: no drift
        return "none", "none"

    # ---- TLS-only bucket policy ----

    def _policy(self, client: Any, s: dict[str, Any]) -> dict[str, Any] | None:
        """The bucket policy document ({} without one); None when the store has no bucket policies."""
        import json

        try:
            raw = client.get_bucket_policy(Bucket=s["bucket_name"]).get("Policy") or "{}"
        except Exception as exc:
            if self._code(exc) == "NoSuchBucketPolicy":
                return {"Statement": []}
            if self._unsupported(s, exc):
                return None
            raise self._fail(s, "GetBucketPolicy", exc) from exc
        doc = json.loads(raw)
        statements = doc.get("Statement", [])
        doc["Statement"] = statements if isinstance(statements, list) else [statements]
        return dict(doc)

    def _tls_statement(self, s: dict[str, Any]) -> dict[str, Any]:
        partitions = {"cn-": "aws-cn", "us-gov-": "aws-us-gov"}
        partition = next((p for r, p in partitions.items() if s["region"].startswith(r)), "aws")
        arn = f"arn:{partition}:s3:::{s['bucket_name']}"
        return {
            "Sid": self._TLS_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }

    def _denies_plain_http(self, doc: dict[str, Any]) -> bool:
        for st in doc.get("Statement", []):
            value = st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
            values = value if isinstance(value, list) else [value]
            if st.get("Sid") == self._TLS_SID and st.get("Effect") == "Deny" and "false" in map(str, values):
                return True
        return False

    def _apply_tls(self, client: Any, s: dict[str, Any]) -> tuple[bool, str]:
        """Returns (tls_only as requested, enforcement mode)."""
        import json

        doc = self._policy(client, s)
        if doc is None:
            return self._tls_unsupported(s)
        others = [st for st in doc["Statement"] if st.get("Sid") != self._TLS_SID]
        wanted = [*others, self._tls_statement(s)] if s["tls_only"] else others
        if wanted != doc["Statement"]:
            try:
                if wanted:
                    policy = {"Version": "2012-10-17", **doc, "Statement": wanted}
                    client.put_bucket_policy(Bucket=s["bucket_name"], Policy=json.dumps(policy))
                else:
                    client.delete_bucket_policy(Bucket=s["bucket_name"])
            except Exception as exc:
                if not self._unsupported(s, exc):
                    raise self._fail(s, "PutBucketPolicy (TLS only)", exc) from exc
                return self._tls_unsupported(s)
        if not s["tls_only"]:
            return False, "none"
        if not self._denies_plain_http(self._policy(client, s) or {}):
            raise S3BucketError(f"{self._where(s)}: the TLS-only statement is missing after PutBucketPolicy")
        return True, "bucket-policy"

    def _tls_unsupported(self, s: dict[str, Any]) -> tuple[bool, str]:
        if not s["tls_only"]:
            return False, "none"
        pulumi.log.warn(
            f"{self._where(s)}: tls_only requested, but this store has no bucket policies "
            "(tls_enforcement=unsupported); require TLS on the store itself"
        )
        return True, "unsupported"

    def _live_tls(self, client: Any, s: dict[str, Any]) -> tuple[bool, str]:
        doc = self._policy(client, s)
        if doc is None:
            unsupported = s["tls_only"] and s["tls_enforcement"] == "unsupported"
            return (True, "unsupported") if unsupported else (False, "none")
        return (True, "bucket-policy") if self._denies_plain_http(doc) else (False, "none")

    # ---- all settings ----

    def _apply(self, client: Any, s: dict[str, Any]) -> dict[str, Any]:
        """Apply every setting in order (the TLS-only policy last) and return the outputs."""
        versioning = self._apply_versioning(client, s)
        blocked, mode = self._apply_public_access(client, s)
        encryption, encryption_mode = self._apply_encryption(client, s)
        tls_only, tls_mode = self._apply_tls(client, s)
        return self._outs(s, versioning, (blocked, mode), (encryption, encryption_mode), (tls_only, tls_mode))

    def _outs(
        self,
        s: dict[str, Any],
        versioning: bool,
        public: tuple[bool, str],
        encryption: tuple[str, str],
        tls: tuple[bool, str],
    ) -> dict[str, Any]:
        return {
            "bucket_name": s["bucket_name"],
            "endpoint_url": s["endpoint_url"],
            "region": s["region"],
            "access_key_id": s["access_key_id"],
            "secret_access_key": s["secret_access_key"],
            "versioning": versioning,
            "block_public_access": public[0],
            "force_destroy": s["force_destroy"],
            "encryption": encryption[0],
            "tls_only": tls[0],
            "uri": f"s3://{s['bucket_name']}",
            "mlops_kind": MLOPS_KIND,
            "public_access_enforcement": public[1],
            "encryption_enforcement": encryption[1],
            "tls_enforcement": tls[1],
            "adopted": s["adopted"],
        }

    def _versions(self, client: Any, s: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
        """Every object version and delete marker (plain keys on stores without versions)."""
        items: list[dict[str, str]] = []
        where = {"Bucket": s["bucket_name"], "Prefix": prefix}
        try:
            for page in client.get_paginator("list_object_versions").paginate(**where):
                for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    items.append({"Key": v["Key"], "VersionId": v["VersionId"]})
            return items
        except Exception as exc:
            if self._code(exc) != "NotImplemented":
                raise self._fail(s, "ListObjectVersions", exc) from exc
        for page in client.get_paginator("list_objects_v2").paginate(**where):
            items.extend({"Key": o["Key"]} for o in page.get("Contents", []))
        return items

    def _delete_items(self, client: Any, s: dict[str, Any], items: list[dict[str, str]]) -> None:
        for start in range(0, len(items), 1000):
            batch = items[start : start + 1000]
            try:
                result = client.delete_objects(
                    Bucket=s["bucket_name"], Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise self._fail(s, "DeleteObjects", exc) from exc
            if result.get("Errors"):
                first = result["Errors"][0]
                raise S3BucketError(
                    f"{self._where(s)}: could not delete {len(result['Errors'])} object versions "
                    f"(first: {first.get('Key')} {first.get('Code')}: {first.get('Message')})"
                )

    # ---- the provider interface ----

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        import re

        failures = []
        name = self._plain(news.get("bucket_name"))
        if isinstance(name, str) and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
            failures.append(
                pulumi.dynamic.CheckFailure(
                    "bucket_name",
                    f"bucket_name '{name}' is not a valid S3 bucket name: use 3-63 characters, "
                    "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
                )
            )
        problem = self._setting_problem(self._settings(news))
        if problem is not None:
            failures.append(pulumi.dynamic.CheckFailure(*problem))
        return pulumi.dynamic.CheckResult(news, failures)

    def _refuse_bad_settings(self, s: dict[str, Any]) -> None:
        problem = self._setting_problem(s)
        if problem is not None:
            raise S3BucketError(f"{self._where(s)}: {problem[1]}")

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        s = self._settings(props)
        self._refuse_bad_settings(s)
        client = self._client(s)
        s["adopted"] = self._exists(client, s)
        if not s["adopted"]:
            kwargs: dict[str, Any] = {"Bucket": s["bucket_name"]}
            if s["region"] != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s["region"]}
            try:
                client.create_bucket(**kwargs)
            except Exception as exc:
                if self._code(exc) != "BucketAlreadyOwnedByYou":  # lost a race with ourselves: adopt
                    raise self._fail(s, "CreateBucket", exc) from exc
                s["adopted"] = True
        try:
            outs = self._apply(client, s)
        except Exception:
            # Create is transactional: a bucket we just made and could not configure goes away.
            if not s["adopted"]:
                try:
                    client.delete_bucket(Bucket=s["bucket_name"])
                except Exception as cleanup:
                    pulumi.log.warn(f"{self._where(s)}: cleanup after failed create failed: {cleanup}")
            raise
        return pulumi.dynamic.CreateResult(s["bucket_name"], outs)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        s = self._settings({**props, "bucket_name": props.get("bucket_name") or id_})
        client = self._client(s)
        if not self._exists(client, s):
            return pulumi.dynamic.ReadResult("", {})  # gone: the engine drops it from state
        outs = self._outs(
            s,
            self._versioning_enabled(client, s),
            self._live_public_access(client, s),
            self._live_encryption_state(client, s),
            self._live_tls(client, s),
        )
        return pulumi.dynamic.ReadResult(id_, outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        old, new = self._settings(olds), self._settings(news)
        replaces = [k for k in ("bucket_name", "endpoint_url", "region") if old[k] != new[k]]
        in_place = [k for k in (*IN_PLACE_PROPS, *SECRET_PROPS) if old[k] != new[k]]
        return pulumi.dynamic.DiffResult(
            changes=bool(replaces or in_place),
            replaces=replaces,
            stables=[],
            # Same name on the same store cannot exist twice: delete the old one first.
            delete_before_replace=bool(replaces) and old["bucket_name"] == new["bucket_name"],
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        s = self._settings(news)
        s["adopted"] = self._settings(olds)["adopted"]
        self._refuse_bad_settings(s)
        client = self._client(s)
        if not self._exists(client, s):
            raise S3BucketError(f"{self._where(s)}: the bucket no longer exists; run `pulumi refresh`")
        return pulumi.dynamic.UpdateResult(self._apply(client, s))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        s = self._settings({**props, "bucket_name": props.get("bucket_name") or id_})
        if s["adopted"]:
            return  # it existed before Pulumi managed it: leave it (and its data) in place
        client = self._client(s)
        if not self._exists(client, s):
            return
        items = self._versions(client, s)
        if items and not s["force_destroy"]:
            raise S3BucketError(
                f"{self._where(s)}: refusing to delete a non-empty bucket ({len(items)} object "
                "versions); empty it first, or set force_destroy=True and `pulumi up` before destroying"
            )
        self._delete_items(client, s, items)
        left = self._versions(client, s)
        if left:
            raise S3BucketError(f"{self._where(s)}: {len(left)} object versions remain after emptying")
        try:
            client.delete_bucket(Bucket=s["bucket_name"])
        except Exception as exc:
            if self._code(exc) != "NoSuchBucket":
                raise self._fail(s, "DeleteBucket", exc) from exc


class S3Bucket(pulumi.dynamic.Resource):
    """An artifact bucket: versioned, private, encrypted (optionally TLS-only), on any S3 API."""

    bucket_name: pulumi.Output[str]
    """The bucket's name."""
    uri: pulumi.Output[str]
    """`s3://<bucket>`."""
    versioning: pulumi.Output[bool]
    """Whether versioning is enabled on the live bucket."""
    block_public_access: pulumi.Output[bool]
    """Whether public access is blocked (see `public_access_enforcement` for how)."""
    public_access_enforcement: pulumi.Output[str]
    """`public-access-block` (S3 API), `verified-private` (no such API: ACL and policy checked) or `none`."""
    encryption_enforcement: pulumi.Output[str]
    """Default encryption in force: `sse-s3`, `sse-kms`, `unsupported` (asked for, store cannot) or `none`."""
    tls_enforcement: pulumi.Output[str]
    """`bucket-policy` (TLS-only statement read back), `unsupported` (no bucket policies) or `none`."""

    def __init__(self, name: str, args: S3BucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        def secret(value: pulumi.Input[str] | None) -> pulumi.Input[str] | None:
            return None if value is None else pulumi.Output.secret(value)

        props: dict[str, Any] = {
            "bucket_name": args.bucket_name,
            "endpoint_url": args.endpoint_url,
            "region": args.region,
            "access_key_id": secret(args.access_key_id),
            "secret_access_key": secret(args.secret_access_key),
            "versioning": args.versioning,
            "block_public_access": args.block_public_access,
            "force_destroy": args.force_destroy,
            "encryption": args.encryption,
            "tls_only": args.tls_only,
            "mlops_kind": MLOPS_KIND,
            # outputs the provider fills in
            "uri": None,
            "public_access_enforcement": None,
            "encryption_enforcement": None,
            "tls_enforcement": None,
            "adopted": None,
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_PROPS))
        )
        super().__init__(S3BucketProvider(), name, props, opts)
