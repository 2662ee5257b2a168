"""TrainingJob: the training image and the Kubernetes Job `train-<release_id>` for one release.

The Job's pod template depends on the release alone (its inputs and the training image), so
a commit that changes nothing the model is made of does not touch the Job. The Job checks that
it computes the release id the program planned before it writes anything, and its exit code
says why it failed (`model.errors.ExitCode`): only registry and store failures are retried.
"""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.common import (
    UNRESOLVED,
    ImageSource,
    WorkloadAccess,
    container_security_context,
    image_reference,
    labels,
    object_name,
    pod_security_context,
    resources,
    secret_env,
)
from components.providers.release_record import ReleaseRecord, ReleaseRecordArgs
from components.registry import TRACKING_CREDENTIAL_KEYS
from model.artifact import release_uri
from model.lineage import ReleaseInputs, spec_sha256
from model.spec import TrainingSpec

__all__ = ["CONFIG_DIR", "TrainingJob", "TrainingJobArgs"]

CONFIG_DIR = "/etc/mlops"
_SPEC, _EXPECTED, _GIT_COMMIT = "spec.yaml", "expected.json", "git_commit"


@dataclass(frozen=True)
class TrainingJobArgs(WorkloadAccess):
    stack: str
    """Stack name, written into the `mlops.dev/stack` label."""
    namespace: pulumi.Input[str]
    """Namespace of the Job and its ConfigMap."""
    spec: TrainingSpec
    """The release to train; mounted as /etc/mlops/spec.yaml."""
    release: ReleaseInputs
    """What the release id hashes, from `model.lineage.plan_release` while the program runs;
    names the Job, and the Job refuses to register anything else."""
    image: ImageSource
    """The training image: a reference, or images/Dockerfile.train to build and push."""
    tracking_uri: pulumi.Input[str]
    """MLflow URI as seen from the Job's pod (MLFLOW_TRACKING_URI)."""
    artifact_root: pulumi.Input[str]
    """s3://<bucket>[/prefix] (MLOPS_ARTIFACT_ROOT)."""
    tracking_secret_name: pulumi.Input[str] | None = None
    """Secret with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow's client
    sends to an authenticated server (ModelRegistry.tracking_secret_name); None: no login."""
    git_commit: str | None = None
    """Lineage only: recorded by the Job that first trains the release (later commits are ignored)."""
    retries: int = 2
    """Retries, inside the Job's pod, after a registry or store failure (exit 3); any other
    failure fails the Job at once."""
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

    def __post_init__(self) -> None:
        if (actual := spec_sha256(self.spec)) != self.release.spec_sha256:
            raise ValueError(
                f"release was planned for spec sha256 {self.release.spec_sha256[:12]}, but spec "
                f"hashes to {actual[:12]}: plan the release from this spec"
            )
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries must be in 0..10, got {self.retries}")
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
    """Registered version, from the registration the Job stored beside the release; 'unresolved'
    when the Job is only rendered."""
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
        rid = args.release.release_id
        lbl = {**labels(args.spec.model_name, "training", args.stack), "mlops.dev/release": rid}

        self.image, _ = image_reference(self, f"{name}-image", args.image, args.push_target)
        config = self._config_map(name, args, lbl)
        job = self._job(name, args, lbl, object_name(config))

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
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
            )
            self.model_version = record.model_version
            self.model_sha256 = record.model_sha256
            self.gates = record.gates_passed.apply(lambda ok: "passed" if ok else "failed")
        else:
            self.model_version = pulumi.Output.from_input(UNRESOLVED)
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

    def _config_map(self, name: str, args: TrainingJobArgs, lbl: dict[str, str]) -> k8s.core.v1.ConfigMap:
        """The spec, the release inputs the Job must reproduce, and the commit (lineage)."""
        rid = args.release.release_id
        data = {
            _SPEC: yaml.safe_dump(args.spec.model_dump(mode="json"), sort_keys=True),
            _EXPECTED: json.dumps(args.release.to_dict(), indent=1, sort_keys=True),
        }
        if args.git_commit:
            data[_GIT_COMMIT] = args.git_commit
        return k8s.core.v1.ConfigMap(
            f"{name}-spec",
            metadata={"name": f"train-{rid}-spec", "namespace": args.namespace, "labels": lbl},
            data=data,
            # The inputs of a release never change: new inputs are a new release and a new map.
            immutable=True,
            # The commit that first trained the release is its lineage; a later commit with the
            # same inputs must not replace the map (nor, through it, look like a new release).
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=[f"data.{_GIT_COMMIT}"]),
        )

    def _job(
        self, name: str, args: TrainingJobArgs, lbl: dict[str, str], config: pulumi.Output[str]
    ) -> k8s.batch.v1.Job:
        annotations: dict[str, str] = {}
        if not args.await_completion:
            # Rendered manifests are never run: waiting would hang until the timeout.
            annotations["pulumi.com/skipAwait"] = "true"
        return k8s.batch.v1.Job(
            f"{name}-job",
            # An explicit name: a new release is a new Job (replace), the old one is deleted.
            # No ttlSecondsAfterFinished: a Job deleted by TTL would be re-created (and the
            # model retrained) by the next `pulumi up --refresh`.
            metadata={
                "name": f"train-{args.release.release_id}",
                "namespace": args.namespace,
                "labels": lbl,
                **({"annotations": annotations} if annotations else {}),
            },
            spec={
                # The first failed pod fails the Job, by its backoff limit: the one Job failure
                # (with the deadline) that the Kubernetes provider's await reports at once; one
                # failed by a podFailurePolicy FailJob rule would keep `pulumi up` waiting until
                # its timeout. Store failures are retried inside the pod (--retries).
                "backoffLimit": 0,
                "activeDeadlineSeconds": args.active_deadline_seconds,
                # An evicted or preempted pod is not the release's fault: a new pod runs.
                "podFailurePolicy": {
                    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
                },
                "template": {"metadata": {"labels": lbl}, "spec": self._pod_spec(args, config)},
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{args.timeout_minutes}m", update=f"{args.timeout_minutes}m"
                ),
            ),
        )

    def _pod_spec(self, args: TrainingJobArgs, config: pulumi.Output[str]) -> dict[str, Any]:
        env: list[dict[str, Any]] = [
            {"name": "MLFLOW_TRACKING_URI", "value": args.tracking_uri},
            {"name": "MLOPS_ARTIFACT_ROOT", "value": args.artifact_root},
            # From the map, not a literal value: the pod template stays the same across commits.
            {
                "name": "MLOPS_GIT_COMMIT",
                "valueFrom": {"configMapKeyRef": {"name": config, "key": _GIT_COMMIT, "optional": True}},
            },
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            *args.s3_env(),
        ]
        if args.tracking_secret_name is not None:
            env += secret_env(args.tracking_secret_name, TRACKING_CREDENTIAL_KEYS)
        command = ["python", "-m", "model.train", "--spec", f"{CONFIG_DIR}/{_SPEC}"]
        # Champion moves after the serving rollout (the stack's ModelAlias), not here.
        command += ["--expected", f"{CONFIG_DIR}/{_EXPECTED}", "--no-promote", "--json"]
        command += ["--retries", str(args.retries)]
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(),
            "containers": [
                {
                    "name": "train",
                    "image": self.image,
                    "command": command,
                    "env": env,
                    # The failure line (exit code and why) reaches the pod's status, and so the
                    # provider's error in `pulumi up`.
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                    "resources": resources(
                        args.cpu_request, args.memory_request, args.cpu_limit, args.memory_limit
                    ),
                    "securityContext": container_security_context(),
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": config}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
            ],
        }
        args.add_pull_secret(pod_spec)
        return pod_spec
