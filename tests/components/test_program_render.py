"""The whole program for both stacks, under mocks, through the render: tree, schemas, policies, diffs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.render import RenderResult, render_stack, run_program
from tests.services import S3Service

REPO = Path(__file__).resolve().parents[2]


def _tree(render: RenderResult) -> set[tuple[str, str, str | None]]:
    return {(r.type, r.name, r.parent) for r in render.resources}


def test_dev_stack_tree(dev_render: RenderResult) -> None:
    stack = "pulumi:pulumi:Stack::mlops-dev"
    top = {(t, n) for t, n, p in _tree(dev_render) if p == stack}
    assert top == {
        ("pulumi:providers:kubernetes", "kubernetes"),
        ("kubernetes:core/v1:Namespace", "namespace"),
        ("mlops:index:ModelRegistry", "registry"),
        ("mlops:index:TrainingJob", "training"),
        ("mlops:index:ModelServing", "serving"),
        ("pulumi-python:dynamic:Resource", "champion"),
        ("mlops:index:MonitoringStack", "monitoring"),
        ("mlops:index:NetworkIsolation", "network"),
    }
    # Every other resource is a child of a component, named after it.
    for type_, name, parent in _tree(dev_render):
        if parent != stack:
            assert parent is not None and parent.startswith("mlops:index:")
            assert name.startswith(parent.split("::")[1] + "-"), (type_, name, parent)
    provider = dev_render.find("pulumi:providers:kubernetes", "kubernetes").inputs
    assert provider["context"] == "kind-mlops" and provider["namespace"] == "mlops-dev"
    assert "renderYamlToDirectory" not in provider
    outputs = dev_render.outputs
    assert re.fullmatch(r"[0-9a-f]{12}", outputs["release_id"])
    assert outputs["model_uri"] == f"s3://mlops-dev-artifacts/breast-cancer/{outputs['release_id']}"
    assert outputs["serving_endpoint"] == "http://breast-cancer.mlops-dev.svc.cluster.local:80"
    assert set(outputs["images"]) == {"serving", "training", "mlflow"}
    job = dev_render.find("kubernetes:batch/v1:Job", "training-job").inputs
    assert job["metadata"]["name"] == f"train-{outputs['release_id']}"
    assert outputs["model_version"] == "1"  # the mocks' stand-in for the recorded version


def test_dev_matches_the_release_the_trainer_computes(dev_render: RenderResult) -> None:
    from infra.config import load_stack_file
    from model.lineage import plan_release

    settings = load_stack_file("dev", REPO)
    assert settings.training is not None
    assert dev_render.outputs["release_id"] == plan_release(settings.training).release_id


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_champion_moves_after_the_rollout_to_the_served_version(
    stack: str, dev_render: RenderResult, prod_render: RenderResult
) -> None:
    render = dev_render if stack == "dev" else prod_render
    champion = render.find("pulumi-python:dynamic:Resource", "champion").inputs
    served = render.find("kubernetes:apps/v1:Deployment", "serving-deployment").inputs
    pod = served["spec"]["template"]
    assert champion["alias"] == "champion" and champion["model_name"] == "breast-cancer"
    assert champion["version"] == pod["metadata"]["annotations"]["mlops.dev/model-version"]
    assert champion["release_id"] == pod["metadata"]["labels"]["mlops.dev/release"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLOPS_MODEL_VERSION"] == champion["version"]
    assert render.outputs["champion"] == {"alias": "champion", "version": champion["version"]}
    expected_uri = {"dev": "http://localhost:30550", "prod": "https://mlflow.example.internal"}[stack]
    assert champion["tracking_uri"] == expected_uri


def test_prod_stack_serves_the_pinned_release(prod_render: RenderResult) -> None:
    types = [r.type for r in prod_render.resources]
    assert "kubernetes:batch/v1:Job" not in types and "mlops:index:TrainingJob" not in types
    assert "docker:index/image:Image" not in types  # images pinned in config: no Docker engine needed
    dynamic = [r.name for r in prod_render.resources if r.type == "pulumi-python:dynamic:Resource"]
    # The bucket is adopted (configured and protected, never deleted); the alias moves after rollout.
    assert dynamic == ["registry-bucket", "champion"]
    deployment = prod_render.find("kubernetes:apps/v1:Deployment", "serving-deployment").inputs
    assert deployment["spec"]["replicas"] >= 3
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["mlops.dev/release"] == "0123456789ab"
    assert (
        pod["metadata"]["annotations"]["mlops.dev/model-uri"]
        == "s3://mlops-prod-artifacts/breast-cancer/0123456789ab"
    )
    assert pod["metadata"]["annotations"]["mlops.dev/model-version"] == "7"
    assert pod["spec"]["topologySpreadConstraints"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", pod["spec"]["containers"][0]["image"])
    assert prod_render.find("kubernetes:policy/v1:PodDisruptionBudget", "serving-disruption-budget")
    for secret in ("registry-mlflow-database", "registry-pull-secret", "registry-s3-credentials"):
        data = prod_render.find("kubernetes:core/v1:Secret", secret).inputs["stringData"]
        assert set(data.values()) == {"[secret]"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_object_validates_against_the_strict_schemas(
    stack: str, dev_render: RenderResult, prod_render: RenderResult
) -> None:
    render = dev_render if stack == "dev" else prod_render
    version = kubernetes_validate.latest_version()
    objects = render.kubernetes_objects
    assert len(objects) >= 10
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_object_carries_the_policy_labels(
    stack: str, dev_render: RenderResult, prod_render: RenderResult
) -> None:
    render = dev_render if stack == "dev" else prod_render
    for obj in render.kubernetes_objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mlops", obj["metadata"]
        assert labels["mlops.dev/stack"] == stack
        assert labels["app.kubernetes.io/component"] in {
            "serving",
            "training",
            "registry",
            "image-registry",
            "monitoring",
        }
        assert labels["app.kubernetes.io/name"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_stacks_pass_the_policy_pack(
    stack: str, dev_render: RenderResult, prod_render: RenderResult
) -> None:
    from policy.rules import check_resources, stack_pack_config

    render = dev_render if stack == "dev" else prod_render
    # dev exposes its in-cluster image registry on a NodePort (push from the host, pull by
    # kubelets), which policy/config/dev.json allows; prod runs on the pack's defaults.
    violations = check_resources(render.policy_resources(), stack_pack_config(stack))
    assert violations == [], "\n".join(f"{v.rule} {v.resource}: {v.message}" for v in violations)


def _project(tmp_path: Path, dev_config: dict[str, Any]) -> Path:
    """A project folder running the repo's program with a different dev stack file."""
    root = tmp_path / "project"
    root.mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    (root / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": dev_config}))
    return root


def _dev_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            # Name-keyed lists (env, containers, volumes) by name: robust to reordering.
            key = item.get("name", index) if isinstance(item, dict) else index
            out.update(_flatten(item, f"{prefix}[{key}]"))
        return out
    return {prefix: value}


@pytest.mark.slow
@pytest.mark.integration
def test_dataset_version_change_moves_only_the_release(tmp_path: Path, s3_env: S3Service) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    bucket = s3_env.make_bucket("data")
    for version, rows in (("v1", frame), ("v2", frame.iloc[:-10])):
        body = rows.to_csv(index=False).encode()
        s3_env.client().put_object(Bucket=bucket, Key=f"bc/{version}.csv", Body=body)

    renders = []
    for version in ("v1", "v2"):
        config = _dev_config()
        config["mlops:training"]["dataset"] = f"s3://{bucket}/bc/{version}.csv"
        config["mlops:artifacts"]["endpoint_url"] = s3_env.endpoint_url
        renders.append(run_program("dev", _project(tmp_path / version, config)))
    before, after = ({(r.type, r.name): r for r in render.resources} for render in renders)
    assert before.keys() == after.keys()  # nothing created or deleted, only changed

    old_id, new_id = renders[0].outputs["release_id"], renders[1].outputs["release_id"]
    assert old_id != new_id
    changed = {key for key in before if before[key].inputs != after[key].inputs}
    assert changed == {
        ("kubernetes:batch/v1:Job", "training-job"),
        ("kubernetes:core/v1:ConfigMap", "training-spec"),  # the release's inputs, named after it
        ("pulumi-python:dynamic:Resource", "training-record"),  # reads the new release back
        ("kubernetes:apps/v1:Deployment", "serving-deployment"),
        ("pulumi-python:dynamic:Resource", "champion"),  # moves to the new release after rollout
    }
    # The Job is replaced: a new name.
    job_names = [
        r[("kubernetes:batch/v1:Job", "training-job")].inputs["metadata"]["name"] for r in (before, after)
    ]
    assert job_names == [f"train-{old_id}", f"train-{new_id}"]

    # The serving Deployment: only the release label, the artifact URI (and what the release's
    # record says about it) move, in the Deployment and its pod template.
    old, new = (
        _flatten(r[("kubernetes:apps/v1:Deployment", "serving-deployment")].inputs) for r in (before, after)
    )
    moved = {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}
    expected = {
        "metadata.labels.mlops.dev/release",
        "metadata.annotations.mlops.dev/model-uri",
        "spec.template.metadata.labels.mlops.dev/release",
        "spec.template.metadata.annotations.mlops.dev/model-uri",
        "spec.template.spec.containers[server].env[MLOPS_MODEL_URI].value",
        "spec.template.spec.containers[server].env[MLOPS_MODEL_SHA256].value",
    }
    assert moved == expected
    assert new["spec.template.metadata.labels.mlops.dev/release"] == new_id
    assert new["spec.template.metadata.annotations.mlops.dev/model-uri"].endswith(f"/breast-cancer/{new_id}")
    # Stack outputs: only the release moved.
    diff = {k for k in renders[0].outputs if renders[0].outputs[k] != renders[1].outputs[k]}
    assert diff == {"release_id", "model_uri"}
    # The second preview of an unchanged dataset reads its identity from the project's cache.
    cache = json.loads((tmp_path / "v1" / "project" / ".mlops" / "dataset-hashes.json").read_text())
    assert set(cache) == {f"s3://{bucket}/bc/v1.csv"}


def test_a_new_commit_leaves_the_training_job_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    renders = []
    for commit in ("a" * 40, "b" * 40):
        monkeypatch.setenv("MLOPS_GIT_COMMIT", commit)
        renders.append({(r.type, r.name): r for r in run_program("dev", REPO).resources})
    before, after = renders
    changed = {key for key in before if before[key].inputs != after[key].inputs}
    # Only the lineage entry of the release's config map, which the engine keeps from the state
    # (ignore_changes): the commit that first trained the release stays its lineage.
    assert changed == {("kubernetes:core/v1:ConfigMap", "training-spec")}
    old, new = (r[("kubernetes:core/v1:ConfigMap", "training-spec")] for r in (before, after))
    moved = {k for k in old.inputs["data"] if old.inputs["data"][k] != new.inputs["data"][k]}
    assert moved == {"git_commit"} and new.ignore_changes == ["data.git_commit"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"mlops:training": {"dataset": "data/train.csv"}},
            "Pulumi.dev.yaml: mlops:training.dataset: 'data/train.csv' is a path on this machine, which "
            "the training Job in the cluster cannot read; use s3://<bucket>/<key>",
        ),
        (
            {"mlops:tracking": {"node_port": None}},
            "the stack moves the registry alias 'champion' after each rollout, which needs an MLflow URL "
            "reachable from where `pulumi up` runs: set mlops:tracking.host_tracking_uri",
        ),
    ],
)
def test_what_the_cluster_cannot_run_is_a_config_error(
    tmp_path: Path, change: dict[str, dict[str, Any]], message: str
) -> None:
    from infra.config import ConfigError

    config = _dev_config()
    for key, fields in change.items():
        config[key] = {**config[key], **fields}
    with pytest.raises(ConfigError) as info:
        run_program("dev", _project(tmp_path, config))
    assert message in str(info.value)


@pytest.mark.slow
def test_render_is_deterministic_and_writes_every_object(tmp_path: Path) -> None:
    first = render_stack("dev", tmp_path / "a", REPO)
    second = render_stack("dev", tmp_path / "b", REPO)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.yaml"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.yaml"))
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_text() == (tmp_path / "b" / rel).read_text(), rel
    manifests = list((tmp_path / "a" / "manifests").rglob("*.yaml"))
    assert len(manifests) == len(first.kubernetes_objects)
    listed = yaml.safe_load((tmp_path / "a" / "resources.yaml").read_text())["resources"]
    assert len(listed) == len(first.resources) == len(second.resources)
    assert all({"type", "name", "parent", "inputs"} <= entry.keys() for entry in listed)
    # Secrets are written as the placeholder (the engine tests check no value leaks).
    text = "".join(p.read_text() for p in (tmp_path / "a").rglob("*.yaml"))
    assert "[secret]" in text


@pytest.mark.slow
def test_render_target_and_images_from_config(tmp_path: Path) -> None:
    digest = "@sha256:" + "d" * 64
    config = _dev_config()
    config["mlops:kubernetes"] = {"render_dir": "rendered", "context": "kind-mlops"}
    config["mlops:images"] = {
        "training": "ghcr.io/acme/train" + digest,
        "serving": "ghcr.io/acme/serve" + digest,
        "mlflow": "ghcr.io/acme/mlflow" + digest,
    }
    render = run_program("dev", _project(tmp_path, config))
    types = [r.type for r in render.resources]
    assert "docker:index/image:Image" not in types  # no Docker engine needed
    provider = render.find("pulumi:providers:kubernetes", "kubernetes").inputs
    assert provider["renderYamlToDirectory"] == "rendered"
    # The real provider refuses cluster settings beside a render directory: the program drops them.
    assert "context" not in provider and "kubeconfig" not in provider
    job = render.find("kubernetes:batch/v1:Job", "training-job").inputs
    assert job["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/train" + digest
    # Nothing runs when rendering, so nothing is read back (serving says so), and no rollout is
    # awaited, so the champion alias is not moved.
    names = [(r.type, r.name) for r in render.resources]
    assert ("pulumi-python:dynamic:Resource", "training-record") not in names
    assert ("pulumi-python:dynamic:Resource", "champion") not in names
    pod = render.find("kubernetes:apps/v1:Deployment", "serving-deployment").inputs["spec"]["template"]
    assert pod["metadata"]["annotations"]["mlops.dev/gates"] == "pending"
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/acme/serve" + digest


def test_policy_pack_sees_the_render_shape(prod_render: RenderResult) -> None:
    """The pack is not vacuous on our shape: a tag-pinned prod image is reported."""
    import copy

    from policy.rules import check_resources

    resources = copy.deepcopy(prod_render.policy_resources())
    for resource in resources:
        if resource["type"] == "kubernetes:apps/v1:Deployment" and resource["name"] == "serving-deployment":
            resource["props"]["spec"]["template"]["spec"]["containers"][0]["image"] = (
                "ghcr.io/acme/serve:latest"
            )
    violations = check_resources(resources, {})
    found = {(v.resource, v.rule) for v in violations}
    assert ("serving-deployment", "image-pinned") in found, violations
