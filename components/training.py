"""TrainingJob: the training image and the Kubernetes Job `train-<release_id>` for one release."""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.common import (
    ImageSource,
    WorkloadAccess,
    container_security_context,
    image_reference,
    labels,
    object_name,
    pod_security_context,
    resources,
)
from components.providers.release_record import ReleaseRecord, ReleaseRecordArgs
from model.artifact import release_uri
from model.spec import TrainingSpec

__all__ = ["GATE_FAILED_EXIT_CODE", "SPEC_PATH", "TrainingJob", "TrainingJobArgs"]

SPEC_PATH = "/etc/mlops/spec.yaml"
GATE_FAILED_EXIT_CODE = 1
_RELEASE_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class TrainingJobArgs(WorkloadAccess):
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: pulumi.Input[str]
    """Namespace of the Job and its ConfigMap."""
    spec: TrainingSpec
    """The release to train; mounted as /etc/mlops/spec.yaml."""
    release_id: str
    """Computed by `model.train.plan_release` while the program runs; names the Job."""
    image: ImageSource
    """The training image: a reference, or images/Dockerfile.train to build and push."""
    tracking_uri: pulumi.Input[str]
    """MLflow URI as seen from the Job's pod (MLFLOW_TRACKING_URI)."""
    artifact_root: pulumi.Input[str]
    """s3://<bucket>[/prefix] (MLOPS_ARTIFACT_ROOT)."""
    git_commit: str | None = None
    """MLOPS_GIT_COMMIT, recorded in the release's lineage."""
    backoff_limit: int = 0
    """Retries after a failed pod; a failed gate (exit 1) never retries."""
    active_deadline_seconds: int = 3600
    """Hard limit on the Job's run time."""
    cpu_request: str = "500m"
    """CPU request of the training container."""
    cpu_limit: str = "2"
    """CPU limit of the training container."""
    memory_request: str = "1Gi"
    """Memory request of the training container."""
    memory_limit: str = "2Gi"
    """Memory limit of the training container."""
    timeout_minutes: int = 60
    """How long `pulumi up` waits for the Job to complete."""
    await_completion: bool = True
    """Wait for the Job and read its record back; False when the provider renders YAML (nothing runs)."""
    record_s3_endpoint_url: pulumi.Input[str] | None = None
    """S3 endpoint as seen from where `pulumi up` runs, to read release.json back."""
    record_access_key_id: pulumi.Input[str] | None = None
    """Secret, for reading release.json back."""
    record_secret_access_key: pulumi.Input[str] | None = None
    """Secret, for reading release.json back."""
    record_tracking_uri: pulumi.Input[str] | None = None
    """MLflow URL reachable from where `pulumi up` runs, to resolve the registered version."""

    def __post_init__(self) -> None:
        if not _RELEASE_ID.match(self.release_id):
            raise ValueError(f"release_id must be 12 lowercase hex digits, got {self.release_id!r}")
        if not 0 <= self.backoff_limit <= 10:
            raise ValueError(f"backoff_limit must be in 0..10, got {self.backoff_limit}")
        if self.active_deadline_seconds < 60:
            raise ValueError(f"active_deadline_seconds must be >= 60, got {self.active_deadline_seconds}")
        if self.timeout_minutes < 1:
            raise ValueError(f"timeout_minutes must be >= 1, got {self.timeout_minutes}")
        self._check_push_target(self.image)


class TrainingJob(pulumi.ComponentResource):
    """Trains, gates and registers one release in the cluster; a failed gate fails `pulumi up`."""

    release_id: pulumi.Output[str]
    """The release trained, read from the Job's name."""
    model_uri: pulumi.Output[str]
    """Immutable release folder: <artifact_root>/<model>/<release_id>."""
    model_name: pulumi.Output[str]
    """Registered model name, from the Job's labels."""
    model_version: pulumi.Output[str]
    """Registered version (from the release record); 'unresolved' without a host-reachable MLflow URL."""
    model_sha256: pulumi.Output[str]
    """Checksum of model/ from release.json; empty when the Job is only rendered."""
    gates: pulumi.Output[str]
    """passed | failed from release.json; 'pending' when the Job is only rendered."""
    image: pulumi.Output[str]
    """The training image reference the Job runs."""
    job_name: pulumi.Output[str]
    """train-<release_id>."""

    def __init__(self, name: str, args: TrainingJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:index:TrainingJob", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rid = args.release_id
        lbl = {**labels(args.spec.model_name, "training", args.stack), "mlops.dev/release": rid}

        self.image, _ = image_reference(self, f"{name}-image", args.image, args.push_target)

        spec_map = k8s.core.v1.ConfigMap(
            f"{name}-spec",
            metadata={"name": f"train-{rid}-spec", "namespace": args.namespace, "labels": lbl},
            data={"spec.yaml": yaml.safe_dump(args.spec.model_dump(mode="json"), sort_keys=True)},
            # The spec of a release never changes: a new spec is a new release and a new map.
            immutable=True,
            opts=child,
        )

        env: list[dict[str, Any]] = [
            {"name": "MLFLOW_TRACKING_URI", "value": args.tracking_uri},
            {"name": "MLOPS_ARTIFACT_ROOT", "value": args.artifact_root},
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
        ]
        if args.git_commit:
            env.append({"name": "MLOPS_GIT_COMMIT", "value": args.git_commit})
        env += args.s3_env()
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [
                {
                    "name": "train",
                    "image": self.image,
                    "command": ["python", "-m", "model.train", "--spec", SPEC_PATH, "--json"],
                    "env": env,
                    "volumeMounts": [
                        {"name": "spec", "mountPath": "/etc/mlops", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                    "resources": resources(
                        args.cpu_request, args.memory_request, args.cpu_limit, args.memory_limit
                    ),
                    "securityContext": container_security_context(),
                }
            ],
            "volumes": [
                {"name": "spec", "configMap": {"name": object_name(spec_map)}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
            ],
        }
        args.add_pull_secret(pod_spec)

        annotations: dict[str, str] = {}
        if not args.await_completion:
            # Rendered manifests are never run: waiting would hang until the timeout.
            annotations["pulumi.com/skipAwait"] = "true"
        job = k8s.batch.v1.Job(
            f"{name}-job",
            # An explicit name: a new release is a new Job (replace), the old one is deleted.
            # No ttlSecondsAfterFinished: a Job deleted by TTL would be re-created (and the
            # model retrained) by the next `pulumi up --refresh`.
            metadata={
                "name": f"train-{rid}",
                "namespace": args.namespace,
                "labels": lbl,
                **({"annotations": annotations} if annotations else {}),
            },
            spec={
                "backoffLimit": args.backoff_limit,
                "activeDeadlineSeconds": args.active_deadline_seconds,
                # A failed gate (exit 1) is final: do not spend retries on it.
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": "train",
                                "operator": "In",
                                "values": [GATE_FAILED_EXIT_CODE],
                            },
                        }
                    ]
                },
                "template": {"metadata": {"labels": lbl}, "spec": pod_spec},
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{args.timeout_minutes}m", update=f"{args.timeout_minutes}m"
                ),
            ),
        )

        self.job_name = object_name(job)
        self.release_id = self.job_name.apply(lambda n: n.removeprefix("train-"))
        self.model_name = job.metadata.apply(lambda m: (m.labels or {})["app.kubernetes.io/name"])
        self.model_uri = pulumi.Output.all(args.artifact_root, self.model_name, self.release_id).apply(
            lambda v: release_uri(v[0], v[1], v[2])
        )
        if args.await_completion:
            record = ReleaseRecord(
                f"{name}-record",
                ReleaseRecordArgs(
                    release_uri=self.model_uri,
                    model_name=self.model_name,
                    release_id=self.release_id,
                    endpoint_url=args.record_s3_endpoint_url,
                    access_key_id=args.record_access_key_id,
                    secret_access_key=args.record_secret_access_key,
                    tracking_uri=args.record_tracking_uri,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
            )
            self.model_version = record.model_version
            self.model_sha256 = record.model_sha256
            self.gates = record.gates_passed.apply(lambda ok: "passed" if ok else "failed")
        else:
            self.model_version = pulumi.Output.from_input("unresolved")
            self.model_sha256 = pulumi.Output.from_input("")
            self.gates = pulumi.Output.from_input("pending")

        self.register_outputs(
            {
                "release_id": self.release_id,
                "model_uri": self.model_uri,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "model_sha256": self.model_sha256,
                "gates": self.gates,
                "image": self.image,
                "job_name": self.job_name,
            }
        )
