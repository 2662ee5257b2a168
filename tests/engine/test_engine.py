"""The program through the real Pulumi engine (render mode): preview, up, secrets, replacements,
the policy pack and the Automation API. See docs/engine.md.

Tests share one tmp copy of the repository and one file:// backend (conftest.py) and run in file
order: the later ones start from the stacks the first ones brought up.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.render import RenderResult, render_stack
from tests.engine.conftest import PROD_SECRETS, Engine, changed_steps
from tests.services import S3Service

pytestmark = pytest.mark.slow

STACKS = ("dev", "prod")
_rendered: dict[str, RenderResult] = {}


def mocks_render(engine: Engine, stack: str, out: Path) -> RenderResult:
    """The mocks-based render of the copy's stack file (the same config the engine sees)."""
    return render_stack(stack, out, engine.project)


def engine_type(obj: dict[str, Any]) -> str:
    """The engine's type token for a manifest: kubernetes:<group>/<version>:<Kind> (core for v1)."""
    api = obj["apiVersion"]
    return f"kubernetes:{api if '/' in api else 'core/' + api}:{obj['kind']}"


def object_key(obj: dict[str, Any], auto_named: set[tuple[str, str]]) -> tuple[str, str, str]:
    """(kind, namespace, name); names the engine auto-generated lose their random suffix."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name"))
    kind = obj["kind"]
    for logical in (n for k, n in auto_named if k == kind):
        if re.fullmatch(re.escape(logical) + r"-[0-9a-z]{8}", name):
            name = logical
    return (kind, str(meta.get("namespace") or ""), name)


# 1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_preview_and_up_render_valid_manifests_matching_the_mocks(
    engine: Engine, stack: str, tmp_path: Path
) -> None:
    from policy.rules import check_resources, stack_pack_config

    engine.pulumi("preview", stack=stack).check()
    engine.pulumi("up", "--yes", "--skip-preview", stack=stack).check()
    manifests = engine.manifests(stack)
    assert len(manifests) >= 10, f"only {len(manifests)} manifests under {engine.render_dirs[stack]}"

    for obj in manifests:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    resources = [{"type": engine_type(o), "name": o["metadata"]["name"], "props": o} for o in manifests]
    violations = check_resources(resources, stack_pack_config(stack))
    assert violations == [], "\n".join(f"{v.rule} {v.resource}: {v.message}" for v in violations)

    # Object for object against the mocks render of the same stack file. Comparable: kind,
    # namespace and name; objects declared without metadata.name get `<logical>-<8 random>` from
    # the engine, so they are compared on their logical name. Contents are not compared
    # (the provider adds defaults such as the autonamed name and pulumi labels).
    render = mocks_render(engine, stack, tmp_path / "mocks")
    _rendered[stack] = render
    auto_named = {
        (r.inputs["kind"], r.name)
        for r in render.resources
        if r.type.startswith("kubernetes:")
        and "kind" in r.inputs
        and not (r.inputs.get("metadata") or {}).get("name")
    }
    mock_objects = render.kubernetes_objects
    for obj in mock_objects:  # the provider's namespace applies to namespaced objects without one
        obj.setdefault("metadata", {})
    engine_keys = sorted(object_key(o, auto_named) for o in manifests)
    mock_keys = sorted(object_key(o, set()) for o in mock_objects)
    ns = f"mlops-{stack}"

    def fill(keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
        return {(k, n or ("" if k in cluster_scoped else ns), name) for k, n, name in keys}

    only_engine, only_mocks = fill(engine_keys) - fill(mock_keys), fill(mock_keys) - fill(engine_keys)
    assert not only_engine and not only_mocks, (
        f"only in the engine: {only_engine}; only in the mocks: {only_mocks}"
    )
    assert len(engine_keys) == len(mock_keys), (engine_keys, mock_keys)


# 2 -------------------------------------------------------------------------------------------


def test_secret_config_is_encrypted_and_never_printed(engine: Engine, tmp_path: Path) -> None:
    value = "RotatedSecretKey/Zq8u3Lm1"
    engine.pulumi("config", "set", "--secret", "mlops:s3_secret_access_key", value, stack="prod").check()
    text = engine.stack_file("prod").read_text()
    entry = yaml.safe_load(text)["config"]["mlops:s3_secret_access_key"]
    assert isinstance(entry, dict) and str(entry.get("secure", "")).startswith("v1:"), entry
    assert "secure: v1:" in text
    for plain in (value, *PROD_SECRETS.values()):
        assert plain not in text

    preview = engine.pulumi("preview", "--diff", stack="prod").check()
    for plain in (value, *PROD_SECRETS.values()):
        assert plain not in preview.output
    render = mocks_render(engine, "prod", tmp_path / "mocks")
    written = "".join(p.read_text() for p in render.files)
    assert "[secret]" in written
    for plain in (value, *PROD_SECRETS.values()):
        assert plain not in written
    # Documented provider limitation (docs/deploy.md): the rendered Secrets hold the value
    # unencrypted (base64 in `data`, which is encoding, not encryption).
    engine.pulumi("up", "--yes", "--skip-preview", stack="prod").check()
    rendered = "".join(p.read_text() for p in engine.render_dirs["prod"].rglob("*.yaml"))
    assert base64.b64encode(value.encode()).decode() in rendered


# 3 -------------------------------------------------------------------------------------------


def test_dataset_change_replaces_the_job_and_updates_serving(engine: Engine, s3: S3Service) -> None:
    from sklearn.datasets import load_breast_cancer

    engine.pulumi("preview", "--expect-no-changes", stack="dev").check()  # starts from a clean up
    old_jobs = [o["metadata"]["name"] for o in engine.manifests("dev") if o["kind"] == "Job"]
    config = engine.stack_config("dev")

    # A path on this machine would not exist in the Job's pod: refused at preview, by key.
    config["mlops:training"]["dataset"] = "data/breast_cancer_v2.csv"
    engine.write_stack_config("dev", config)
    local = engine.pulumi("preview", stack="dev")
    assert local.returncode != 0
    assert "mlops:training.dataset: 'data/breast_cancer_v2.csv' is a path on this machine" in local.output

    # The new version of the data in the store, read with the stack's endpoint and credentials.
    frame = load_breast_cancer(as_frame=True).frame
    frame.iloc[0, 0] = float(frame.iloc[0, 0]) + 0.5  # one value changed
    bucket = s3.make_bucket("datasets")
    s3.client().put_object(Bucket=bucket, Key="bc/v2.csv", Body=frame.to_csv(index=False).encode())
    config["mlops:training"]["dataset"] = f"s3://{bucket}/bc/v2.csv"
    engine.write_stack_config("dev", config)

    changes = changed_steps(engine.preview_json("dev"))
    replaced = {"create-replacement", "replace", "delete-replaced"}
    assert changes.get("kubernetes:batch/v1:Job::training-job", set()) & replaced, changes
    assert changes.get("kubernetes:apps/v1:Deployment::serving-deployment") == {"update"}, changes
    assert changes.get("kubernetes:core/v1:ConfigMap::training-spec", set()) & replaced, changes
    # Exactly these: the stack's outputs (release_id, model_uri) move too, but preview --json
    # reports the Stack as `same`; no ReleaseRecord exists in render mode (nothing to read back).
    assert set(changes) == {
        "kubernetes:batch/v1:Job::training-job",
        "kubernetes:core/v1:ConfigMap::training-spec",
        "kubernetes:apps/v1:Deployment::serving-deployment",
    }, changes
    # The preview learnt the dataset's identity once; the next one reads only its ETag.
    cache = json.loads((engine.project / ".mlops" / "dataset-hashes.json").read_text())
    assert f"s3://{bucket}/bc/v2.csv" in cache

    engine.pulumi("up", "--yes", "--skip-preview", stack="dev").check()
    engine.pulumi("preview", "--expect-no-changes", stack="dev").check()
    # The render dir now holds only the new Job (the replaced one's manifest is deleted).
    new_jobs = [o["metadata"]["name"] for o in engine.manifests("dev") if o["kind"] == "Job"]
    assert len(old_jobs) == len(new_jobs) == 1 and old_jobs != new_jobs, (old_jobs, new_jobs)


def test_a_new_commit_does_not_touch_the_training_job(engine: Engine) -> None:
    """The commit is lineage (kept in the release's config map), not part of the Job."""

    def lineage() -> str:
        (config_map,) = [
            o
            for o in engine.manifests("dev")
            if o["kind"] == "ConfigMap" and "git_commit" in o.get("data", {})
        ]
        return str(config_map["data"]["git_commit"])

    first = lineage()
    for commit in ("1" * 40, "2" * 40):
        engine.pulumi("preview", "--expect-no-changes", stack="dev", env={"MLOPS_GIT_COMMIT": commit}).check()
        engine.pulumi("up", "--yes", "--skip-preview", stack="dev", env={"MLOPS_GIT_COMMIT": commit}).check()
    assert lineage() == first  # the commit that first trained the release stays its lineage


# 4 -------------------------------------------------------------------------------------------


def test_policy_pack_passes_prod_and_rejects_an_unpinned_image(engine: Engine) -> None:
    pack = str(engine.project / "policy")
    clean = engine.pulumi("preview", "--policy-pack", pack, stack="prod")
    clean.check()
    assert "mlops-platform@v0.1.0" in clean.output, clean.output[-3000:]  # the pack did run
    original = engine.stack_file("prod").read_text()
    try:
        config = engine.stack_config("prod")
        config["mlops:images"]["serving"] = "ghcr.io/acme/mlops-serve:1.0"
        engine.write_stack_config("prod", config)
        bad = engine.pulumi("preview", "--policy-pack", pack, stack="prod")
    finally:
        engine.stack_file("prod").write_text(original)
    assert bad.returncode != 0, bad.output[-4000:]
    assert "image-pinned" in bad.output, bad.output[-4000:]
    assert "is not pinned by digest (@sha256:...), required in stack 'prod'" in bad.output, bad.output[-4000:]


def test_policy_pack_reads_the_dev_config_file(engine: Engine) -> None:
    """dev's NodePort registry passes only with policy/config/dev.json, as `mlops render` reads it."""
    pack = str(engine.project / "policy")
    config = str(engine.project / "policy" / "config" / "dev.json")
    allowed = engine.pulumi("preview", "--policy-pack", pack, "--policy-pack-config", config, stack="dev")
    allowed.check()
    refused = engine.pulumi("preview", "--policy-pack", pack, stack="dev")
    assert refused.returncode != 0, refused.output[-4000:]
    assert "service-type-allowed" in refused.output and "NodePort" in refused.output, refused.output[-4000:]


# 5 -------------------------------------------------------------------------------------------


def test_automation_api_reads_the_release_output(engine: Engine, tmp_path: Path, s3_env: S3Service) -> None:
    """(The mocks render reads dev's s3:// dataset with ambient credentials: `s3_env`.)"""
    from pulumi import automation as auto

    command = auto.PulumiCommand(
        root=str(Path(engine.env["PULUMI_ENGINE_BIN_DIR"]).parent), skip_version_check=True
    )
    stack = auto.select_stack(
        stack_name="dev",
        work_dir=str(engine.project),
        opts=auto.LocalWorkspaceOptions(env_vars=engine.env, pulumi_command=command),
    )
    outputs = stack.outputs()
    expected = mocks_render(engine, "dev", tmp_path / "mocks").outputs["release_id"]
    assert outputs["release_id"].value == expected
