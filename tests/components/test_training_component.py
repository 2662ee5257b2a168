"""TrainingJob under Pulumi's mocks: the Job per release, its contract with model.train, outputs."""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from components.common import ImageSource, PushTarget
from components.training import TrainingJob, TrainingJobArgs
from model.lineage import ReleaseInputs
from model.spec import TrainingSpec

TOKEN = "mlops:index:TrainingJob"
SPEC = TrainingSpec(
    model_name="iris-model",
    dataset="sklearn:iris",
    target="target",
    task="classification",
    estimator="random_forest",
    params={"n_estimators": 10},
)
RUNTIME = {"python": "3.11", "scikit-learn": "1.9.1"}
RELEASE = ReleaseInputs.of(SPEC, "d" * 64, "c" * 64, RUNTIME)
RID = RELEASE.release_id


def _args(**overrides: object) -> TrainingJobArgs:
    values: dict[str, object] = {
        "stack": "dev",
        "namespace": "ns",
        "spec": SPEC,
        "release": RELEASE,
        "image": ImageSource(dockerfile="images/Dockerfile.train", repository="mlops-train", tag="t1"),
        "push_target": PushTarget(server="localhost:30500"),
        "tracking_uri": "http://mlflow.ns.svc.cluster.local:5000",
        "artifact_root": "s3://bucket",
        "s3_endpoint_url": "http://minio:9000",
        "s3_secret_name": "s3-creds",
        "git_commit": "abc123",
        "record_s3_endpoint_url": "http://localhost:9000",
    }
    values.update(overrides)
    return TrainingJobArgs(**values)  # type: ignore[arg-type]


def test_job_per_release_and_outputs(pulumi_mocks, unique) -> None:
    name = unique("train")
    job = pulumi_mocks.build(lambda: TrainingJob(name, _args()))
    assert job.pulumi_resource_type == TOKEN
    children = pulumi_mocks.children_of(TOKEN, name)
    assert [(c.type, c.name) for c in children] == sorted(
        [
            ("docker:index/image:Image", f"{name}-image"),
            ("kubernetes:batch/v1:Job", f"{name}-job"),
            ("kubernetes:core/v1:ConfigMap", f"{name}-spec"),
            ("pulumi-python:dynamic:Resource", f"{name}-record"),
        ]
    )

    manifest = pulumi_mocks.one("kubernetes:batch/v1:Job", f"{name}-job").inputs
    assert manifest["metadata"]["name"] == f"train-{RID}"
    assert manifest["metadata"]["labels"]["mlops.dev/release"] == RID
    assert manifest["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    assert "annotations" not in manifest["metadata"]  # the provider waits for completion
    spec = manifest["spec"]
    # The first failed pod fails the Job (BackoffLimitExceeded, which the provider reports at
    # once); store failures are retried inside the pod; an evicted pod does not count.
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 3600
    assert "ttlSecondsAfterFinished" not in spec
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    ]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"] == [
        "python",
        "-m",
        "model.train",
        "--spec",
        "/etc/mlops/spec.yaml",
        "--expected",
        "/etc/mlops/expected.json",
        "--no-promote",
        "--json",
        "--retries",
        "2",
    ]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"].startswith("localhost:30500/mlops-train@sha256:")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.ns.svc.cluster.local:5000"
    assert env["MLOPS_ARTIFACT_ROOT"] == "s3://bucket"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The commit reaches the pod through the map, so the pod template is the same at every commit.
    assert env["MLOPS_GIT_COMMIT"] == {
        "configMapKeyRef": {"name": f"train-{RID}-spec", "key": "git_commit", "optional": True}
    }
    assert "abc123" not in str(spec["template"])
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "config", "configMap": {"name": f"train-{RID}-spec"}} in pod["volumes"]

    config_map = pulumi_mocks.one("kubernetes:core/v1:ConfigMap", f"{name}-spec")
    data = config_map.inputs["data"]
    assert config_map.inputs["immutable"] is True
    assert TrainingSpec.model_validate(yaml.safe_load(data["spec.yaml"])) == SPEC
    assert ReleaseInputs.from_dict(json.loads(data["expected.json"])) == RELEASE
    assert data["git_commit"] == "abc123"
    assert config_map.ignore_changes == ["data.git_commit"]  # lineage of the first training only

    image = pulumi_mocks.one("docker:index/image:Image", f"{name}-image").inputs
    assert image["imageName"] == "localhost:30500/mlops-train:t1"
    assert image["build"]["dockerfile"].endswith("images/Dockerfile.train")

    record = pulumi_mocks.one("pulumi-python:dynamic:Resource", f"{name}-record").inputs
    assert record["release_uri"] == f"s3://bucket/iris-model/{RID}"
    assert record["endpoint_url"] == "http://localhost:9000"
    assert "tracking_uri" not in record  # the version is read from the store, not from MLflow

    out = pulumi_mocks.value(
        pulumi.Output.all(
            job.release_id, job.model_uri, job.model_name, job.model_version, job.gates, job.job_name
        )
    )
    assert out == [RID, f"s3://bucket/iris-model/{RID}", "iris-model", "1", "passed", f"train-{RID}"]
    assert len(pulumi_mocks.value(job.model_sha256)) == 64


def test_render_mode_skips_waiting_and_the_record(pulumi_mocks, unique) -> None:
    name = unique("train")
    ref = "ghcr.io/acme/train@sha256:" + "b" * 64
    job = pulumi_mocks.build(
        lambda: TrainingJob(name, _args(await_completion=False, image=ImageSource(ref=ref), push_target=None))
    )
    types = [c.type for c in pulumi_mocks.children_of(TOKEN, name)]
    assert types == ["kubernetes:batch/v1:Job", "kubernetes:core/v1:ConfigMap"]  # no build, no record
    manifest = pulumi_mocks.one("kubernetes:batch/v1:Job", f"{name}-job").inputs
    assert manifest["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == ref
    assert pulumi_mocks.value(pulumi.Output.all(job.gates, job.model_version)) == ["pending", "unresolved"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"release": ReleaseInputs("0" * 64, "d" * 64, "c" * 64, RUNTIME)},
            "release was planned for spec sha256 000000000000, but spec hashes to",
        ),
        ({"retries": 11}, "retries must be in 0..10, got 11"),
        ({"active_deadline_seconds": 5}, "active_deadline_seconds must be >= 60, got 5"),
        ({"push_target": None}, "push_target is required when the image is built"),
    ],
)
def test_invalid_args_name_the_argument(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        _args(**overrides)
    assert message in str(err.value)
