"""`mlops diff`: two renders of a stack classified as the engine would plan them, and the command."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from infra.cli import app
from infra.diff import PlanDiff, diff_renders
from infra.diff_output import to_json, to_markdown, to_text
from infra.render import RenderedResource, RenderResult, run_program
from tests.services import S3Service

REPO = Path(__file__).resolve().parents[2]
STACK = "pulumi:pulumi:Stack::mlops-dev"
PROVIDER = RenderedResource("pulumi:providers:kubernetes", "kubernetes", STACK, True, {"namespace": "ns"})


def _render(*resources: RenderedResource, outputs: dict[str, Any] | None = None) -> RenderResult:
    return RenderResult("dev", None, [PROVIDER, *resources], outputs or {})


def _k8s(obj: dict[str, Any], name: str = "thing", ignore: tuple[str, ...] = ()) -> RenderedResource:
    group_version, kind = obj["apiVersion"], obj["kind"]
    type_ = f"kubernetes:{group_version if '/' in group_version else 'core/' + group_version}:{kind}"
    return RenderedResource(type_, name, STACK, True, obj, list(ignore))


def _plan(before: RenderedResource, change: Callable[[dict[str, Any]], None], **kw: Any) -> PlanDiff:
    inputs = copy.deepcopy(before.inputs)
    change(inputs)
    after = RenderedResource(before.type, before.name, before.parent, True, inputs, **kw)
    return diff_renders(_render(before), _render(after))


def _text(diff: PlanDiff) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(to_text(diff))
    return console.export_text()


JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "train-a", "namespace": "ns", "labels": {"mlops.dev/release": "a"}},
    "spec": {"template": {"spec": {"containers": [{"name": "train", "image": "train:1"}]}}},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "serve", "namespace": "ns"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "serve"}},
        "template": {
            "metadata": {"labels": {"app": "serve"}},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "serve:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                    }
                ]
            },
        },
    },
}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "None"}}
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}}
PVC = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "data"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "[secret]"}}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            obj = obj[int(key)] if key.isdigit() else obj[key]  # type: ignore[index]
        obj[leaf] = value

    return change


@pytest.mark.parametrize(
    ("obj", "change", "action", "why"),
    [
        (JOB, _set("spec.template.spec.containers.0.image", "train:2"), "replace", ("spec.template",)),
        (JOB, _set("metadata.name", "train-b"), "replace", ("metadata.name",)),
        (JOB, _set("metadata.labels", {"mlops.dev/release": "b"}), "update", ()),
        (DEPLOYMENT, _set("spec.selector.matchLabels", {"app": "other"}), "replace", ("spec.selector",)),
        (DEPLOYMENT, _set("spec.template.spec.containers.0.image", "serve:2"), "update", ()),
        (SERVICE, _set("spec.clusterIP", "10.0.0.9"), "replace", ("spec.clusterIP",)),
        (SERVICE, _set("spec.ports", [{"port": 80}]), "update", ()),
        (CONFIG_MAP, _set("data", {"k": "2"}), "replace", ("data",)),  # the provider's default
        (PVC, _set("spec.resources", {"requests": {"storage": "2Gi"}}), "update", ()),
        (PVC, _set("spec.storageClassName", "fast"), "replace", ("spec.storageClassName",)),
        (SECRET, _set("stringData", {"k": "[secret]", "j": "[secret]"}), "replace", ("stringData",)),
        (
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"}, "spec": {}},
            _set("spec", {"maxUnavailable": 1}),
            "update",
            (),
        ),
    ],
)
def test_kubernetes_objects_replace_on_the_providers_force_new_fields(
    obj: dict[str, Any], change: Callable[[dict[str, Any]], None], action: str, why: tuple[str, ...]
) -> None:
    diff = _plan(_k8s(obj), change)
    [resource] = diff.resources
    assert (resource.action, resource.replaced_by) == (action, why)


def test_a_mutable_config_map_updates_when_the_provider_allows_it() -> None:
    provider = {"namespace": "ns", "enableConfigMapMutable": "true"}
    for immutable, action in ((False, "update"), (True, "replace")):
        before = _k8s({**CONFIG_MAP, "immutable": immutable})
        after = _k8s({**CONFIG_MAP, "immutable": immutable, "data": {"k": "2"}})
        allow = RenderedResource(PROVIDER.type, PROVIDER.name, STACK, True, provider)
        diff = diff_renders(
            RenderResult("dev", None, [allow, before], {}), RenderResult("dev", None, [allow, after], {})
        )
        assert [r.action for r in diff.resources] == [action]


def test_pod_template_changes_are_listed_by_container_and_env_name() -> None:
    def change(obj: dict[str, Any]) -> None:
        container = obj["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [{"name": "B"}, {"name": "A", "value": "2"}, {"name": "C", "value": "x"}]
        obj["spec"]["template"]["metadata"]["labels"]["mlops.dev/release"] = "b"

    [resource] = _plan(_k8s(DEPLOYMENT, "serving-deployment"), change).resources
    found = [(c.path, c.kind, c.before, c.after) for c in resource.changes]
    assert found == [
        ('spec.template.metadata.labels["mlops.dev/release"]', "add", None, "b"),
        ("spec.template.spec.containers[server].env[A].value", "change", "1", "2"),
        ("spec.template.spec.containers[server].env[C]", "add", None, {"name": "C", "value": "x"}),
        # The provider compares lists by index: a reorder changes the pod template too.
        ("spec.template.spec.containers[server].env", "change", ["A", "B"], ["B", "A"]),
    ]
    assert resource.action == "update" and resource.describes == "Deployment ns/serve"


def test_ignore_changes_paths_keep_the_old_value() -> None:
    replicas = _plan(
        _k8s(DEPLOYMENT, ignore=("spec.replicas",)),
        _set("spec.replicas", 5),
        ignore_changes=["spec.replicas"],
    )
    assert not replicas.has_changes
    config = {**CONFIG_MAP, "data": {"k": "1", "git_commit": "a" * 40}}
    commit = _plan(_k8s(config), _set("data.git_commit", "b" * 40), ignore_changes=["data.git_commit"])
    assert not commit.has_changes
    # Absent from the old inputs: stays absent (the engine's PropertyPath.Reset).
    before = _k8s(CONFIG_MAP)
    added = _plan(before, _set("data.git_commit", "b" * 40), ignore_changes=["data.git_commit"])
    assert not added.has_changes


def _dynamic(render: RenderResult, name: str) -> RenderedResource:
    return render.find("pulumi-python:dynamic:Resource", name)


@pytest.mark.parametrize(
    ("name", "key", "value", "action"),
    [
        ("champion", "version", "2", "update"),
        ("champion", "release_id", "0f9e8d7c6b5a", "update"),
        ("champion", "alias", "stable", "replace"),
        ("champion", "tracking_uri", "http://elsewhere:5000", "replace"),
        ("training-record", "release_id", "0f9e8d7c6b5a", "replace"),
        ("training-record", "endpoint_url", "http://s3.elsewhere", "replace"),
        ("training-record", "access_key_id", "[secret]", None),  # masked both sides: nothing to see
        ("registry-bucket", "versioning", False, "update"),
        ("registry-bucket", "force_destroy", False, "update"),
        ("registry-bucket", "bucket_name", "mlops-dev-other", "replace"),
    ],
)
def test_dynamic_resources_follow_their_providers_diff(
    dev_render: RenderResult, name: str, key: str, value: Any, action: str | None
) -> None:
    diff = _plan(_dynamic(dev_render, name), _set(key, value))
    assert [r.action for r in diff.resources] == ([action] if action else [])
    if action == "replace":
        assert diff.resources[0].replaced_by == (key,)


def test_creates_deletes_and_a_replaced_provider(dev_render: RenderResult) -> None:
    extra = _k8s(SERVICE, "extra")
    grown = replace_resources(dev_render, [*dev_render.resources, extra])
    assert [(r.action, r.name) for r in diff_renders(dev_render, grown).resources] == [("create", "extra")]
    assert [(r.action, r.name) for r in diff_renders(grown, dev_render).resources] == [("delete", "extra")]

    def moved(render: RenderResult, **inputs: Any) -> RenderResult:
        return replace_resources(
            render,
            [
                RenderedResource(r.type, r.name, r.parent, r.custom, {**r.inputs, **inputs})
                if r.type == PROVIDER.type
                else r
                for r in render.resources
            ],
        )

    # A new render directory replaces the provider, and with it every object it manages.
    rendered = diff_renders(dev_render, moved(dev_render, renderYamlToDirectory="out"))
    objects = {r.name for r in dev_render.resources if r.type.startswith("kubernetes:")}
    assert {r.name for r in rendered.resources if r.action == "replace"} == {"kubernetes"} | objects
    assert all("provider" in r.replaced_by for r in rendered.resources if r.name != "kubernetes")
    # Without a kubeconfig in the inputs, a new context cannot say the cluster changed: an update.
    context = diff_renders(dev_render, moved(dev_render, context="other"))
    assert [(r.action, r.name) for r in context.resources] == [("update", "kubernetes")]


def replace_resources(render: RenderResult, resources: list[RenderedResource]) -> RenderResult:
    return RenderResult(render.stack, None, resources, render.outputs)


def _new_release(render: RenderResult, new_id: str) -> RenderResult:
    """The same stack with every mention of its release id moved to `new_id` (as a new dataset does)."""
    old_id = render.outputs["release_id"]
    moved = json.loads(json.dumps([r.as_dict() for r in render.resources]).replace(old_id, new_id))
    resources = [
        RenderedResource(
            r["type"], r["name"], r["parent"], r["custom"], r["inputs"], r.get("ignore_changes", [])
        )
        for r in moved
    ]
    return RenderResult(
        render.stack, None, resources, json.loads(json.dumps(render.outputs).replace(old_id, new_id))
    )


def test_a_new_release_reads_as_one_line_then_the_details(dev_render: RenderResult) -> None:
    old_id, new_id = dev_render.outputs["release_id"], "0f9e8d7c6b5a"
    diff = diff_renders(dev_render, _new_release(dev_render, new_id), against="main")
    assert diff.has_changes
    spec = dev_render.find("kubernetes:core/v1:ConfigMap", "training-spec").inputs["data"]
    dataset_hash = json.loads(spec["expected.json"])["dataset_hash"]
    assert diff.summary == (
        f"new release {new_id} (dataset sklearn:breast_cancer sha256 {dataset_hash[:12]}): "
        "training Job replaced, serving rolled to it, champion moves after rollout"
    )
    assert diff.release.line() == f"release {old_id} -> {new_id}, model version: registered by train-{new_id}"
    assert [(r.action, r.name) for r in diff.resources] == [
        ("replace", "training-job"),
        ("replace", "training-spec"),
        ("replace", "training-record"),
        ("update", "serving-deployment"),
        ("update", "champion"),
    ]
    job = diff.resources[0]
    assert job.replaced_by == ("metadata.name", "spec.template")
    assert job.describes == f"Job mlops-dev/train-{old_id} -> train-{new_id}"
    markdown = to_markdown(diff)
    assert markdown.splitlines()[:3] == [
        "### `mlops diff`: stack dev against main",
        "",
        f"**{diff.release.line()}**",
    ]
    assert (
        f"| replace | `training-job` | {job.describes} | replaces on metadata.name, spec.template |"
        in markdown
    )
    assert "| update | `serving-deployment` | Deployment mlops-dev/breast-cancer-stable |" in markdown
    assert "<details><summary>training-job (replace)" in markdown  # long property lists collapse
    text = _text(diff)
    assert diff.summary in text and "Plan: 3 to replace, 2 to update" in text
    assert f'+ spec.template.metadata.labels["mlops.dev/release"]: {new_id}' in text
    data = json.loads(to_json(diff))
    assert data["has_changes"] is True and data["counts"] == {"replace": 3, "update": 2}
    assert data["release"]["after"] == new_id and data["summary"] == diff.summary


def test_identical_renders_have_no_changes(prod_render: RenderResult) -> None:
    diff = diff_renders(prod_render, prod_render)
    assert not diff.has_changes and diff.summary == "no changes"
    assert diff.release.line() == "release 0123456789ab (unchanged), model version 7"


# ---------------------------------------------------------------------------------------------
# The command


def _diff(*args: str) -> Any:
    return CliRunner().invoke(app, ["diff", *args], catch_exceptions=False)


def test_a_new_commit_alone_is_no_change_against_a_saved_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_GIT_COMMIT", "a" * 40)
    saved = tmp_path / "render"
    rendered = CliRunner().invoke(app, ["render", "--workdir", str(REPO), "--out", str(saved), "--no-check"])
    assert rendered.exit_code == 0, rendered.output
    assert "b" * 40 not in (saved / "resources.yaml").read_text()
    monkeypatch.setenv("MLOPS_GIT_COMMIT", "b" * 40)
    result = _diff("--workdir", str(REPO), "--against", str(saved), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "\nno changes\n" in result.output and "Plan: no resource changes" in result.output


def _bad_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "infra").symlink_to(REPO / "infra")
    config = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    config["config"]["mlops:training"]["dataset"] = "data/train.csv"
    (root / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "resources.yaml").write_text("stack: dev\nresources: []\n")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stack", "qa"], "error: {repo}/Pulumi.qa.yaml does not exist; stacks here: dev, prod"),
        (["--against", "no-such-rev"], "error: unknown git revision 'no-such-rev' in {repo}"),
        (["--format", "yaml"], "error: --format must be one of text, markdown, json (got 'yaml')"),
        (["--bogus"], "No such option: --bogus"),
        (["--against"], "Option '--against' requires an argument"),
        (
            ["--stack", "prod", "--against", "{tmp}/empty"],
            "error: {tmp}/empty holds a render of stack 'dev', not 'prod'",
        ),
    ],
)
def test_errors_exit_1_with_a_message_naming_what_failed(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "resources.yaml").write_text("stack: dev\nresources: []\n")
    args = [a.format(tmp=tmp_path) for a in args]
    result = _diff("--workdir", str(REPO), *args)
    assert result.exit_code == 1, result.output
    assert message.format(repo=REPO, tmp=tmp_path) in result.output


def test_a_render_that_fails_exits_1(tmp_path: Path) -> None:
    root = _bad_project(tmp_path)
    result = _diff("--workdir", str(root), "--against", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert result.output.startswith(f"error: rendering stack 'dev' in {root} failed: Pulumi.dev.yaml: ")
    assert "mlops:training.dataset: 'data/train.csv' is a path on this machine" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout.strip()


def _git_project(tmp_path: Path) -> Path:
    """A git repository holding a copy of the project's files (its own code renders each side)."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    for folder in ("infra", "components", "model", "images"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "the project")
    return root


def _change_stack(root: Path, change: Callable[[dict[str, Any]], None], message: str) -> None:
    stack_file = root / "Pulumi.dev.yaml"
    config = yaml.safe_load(stack_file.read_text())
    change(config["config"])
    stack_file.write_text(yaml.safe_dump(config))
    _git(root, "commit", "-qam", message)


def _rows(markdown: str) -> list[tuple[str, str]]:
    """(action, resource) of the markdown table's rows."""
    rows = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| ") and "`" in line]
    return [(cells[0].removeprefix("| "), cells[1].strip("`")) for cells in rows]


@pytest.mark.slow
def test_against_git_revisions(tmp_path: Path) -> None:
    root = _git_project(tmp_path)
    _change_stack(root, lambda c: c["mlops:training"]["params"].update(n_estimators=50), "fewer trees")
    first = _git(root, "rev-parse", "HEAD~1")

    changed = _diff("--workdir", str(root), "--against", first, "--format", "markdown")
    assert changed.exit_code == 2, changed.output
    assert f"### `mlops diff`: stack dev against {first}" in changed.output
    assert "training Job replaced, serving rolled to it, champion moves after rollout" in changed.output
    assert _rows(changed.output) == [
        ("replace", "training-job"),
        ("replace", "training-spec"),
        ("replace", "training-record"),
        ("update", "serving-deployment"),
        ("update", "champion"),
    ]
    # The default: the merge base of HEAD with main, here HEAD itself.
    same = _diff("--workdir", str(root), "--format", "json")
    assert same.exit_code == 0, same.output
    data = json.loads(same.output)
    assert data["has_changes"] is False and data["resources"] == []
    assert data["against"].startswith("merge base with main (")


@pytest.mark.slow
@pytest.mark.integration
def test_a_dataset_version_change(tmp_path: Path, s3_env: S3Service) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    bucket = s3_env.make_bucket("data")
    for version, rows in (("v1", frame), ("v2", frame.iloc[:-10])):
        s3_env.client().put_object(
            Bucket=bucket, Key=f"bc/{version}.csv", Body=rows.to_csv(index=False).encode()
        )

    def dataset(version: str) -> Callable[[dict[str, Any]], None]:
        def change(config: dict[str, Any]) -> None:
            config["mlops:training"]["dataset"] = f"s3://{bucket}/bc/{version}.csv"
            config["mlops:artifacts"]["endpoint_url"] = s3_env.endpoint_url

        return change

    root = _git_project(tmp_path)
    _change_stack(root, dataset("v1"), "dataset v1")
    _change_stack(root, dataset("v2"), "dataset v2")

    runs = [_diff("--workdir", str(root), "--against", "HEAD~1", "--format", "markdown") for _ in range(2)]
    assert [r.exit_code for r in runs] == [2, 2], runs[0].output
    assert runs[0].stdout_bytes == runs[1].stdout_bytes  # a re-run posts the same comment
    markdown = runs[0].output
    summary = next(line for line in markdown.splitlines() if line.startswith("new release "))
    assert f"(dataset s3://{bucket}/bc/v2.csv sha256 " in summary
    assert summary.endswith(": training Job replaced, serving rolled to it, champion moves after rollout")
    assert _rows(markdown) == [
        ("replace", "training-job"),
        ("replace", "training-spec"),
        ("replace", "training-record"),
        ("update", "serving-deployment"),
        ("update", "champion"),
    ]


def test_a_secret_never_appears_in_any_format(tmp_path: Path) -> None:
    renders = []
    for index, value in enumerate(("first-secret-value-1234", "second-secret-value-5678")):
        root = tmp_path / str(index)
        root.mkdir()
        shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
        (root / "infra").symlink_to(REPO / "infra")
        config = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
        config["config"].update({"mlops:s3_access_key_id": value, "mlops:s3_secret_access_key": value})
        config["config"]["mlops:serving"]["max_replicas"] = 2 + index  # a change besides the secret
        (root / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))
        renders.append(run_program("dev", root))
    diff = diff_renders(*renders)
    assert diff.has_changes
    assert [(r.action, r.name) for r in diff.resources] == [("update", "serving-autoscaler")]
    for text in (to_markdown(diff), to_json(diff), _text(diff)):
        assert "secret-value" not in text
