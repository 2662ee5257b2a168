"""The CI/CD workflows (.github/workflows/) and the scripts they run (scripts/ci/).

Static checks: the GitHub workflow schema (check-jsonschema's vendored copy, offline), actionlint
(built by scripts/bootstrap-actionlint), actions pinned to reviewed commit SHAs, least-privilege
`permissions`, no expression inside a `run:` script, every `run:` one script under scripts/ci/.
Then the scripts that need no cloud credentials run the way the workflows run them (same
environment variables) on a clone of the repository, and their output is checked.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.retrain.helpers import NEWEST, enable_retrain, write_event, write_versions

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
CI_SCRIPTS = REPO / "scripts" / "ci"
VENV_BIN = Path(sys.executable).parent

# Every third-party action the workflows use, at the commit a person checked: the version tag
# in the trailing comment must be this one. Changing a pin means changing it here too (how to
# resolve a tag to its commit: docs/deploy.md, CI/CD).
REVIEWED_PINS: dict[str, tuple[str, str]] = {
    "actions/checkout": ("de0fac2e4500dabe0009e67214ff5f5447ce83dd", "v6.0.2"),
    "actions/setup-python": ("e797f83bcb11b83ae66e0230d6156d7c80228e7c", "v6.0.0"),
    "actions/upload-artifact": ("330a01c490aca151604b8cf639adc76d48f6c5d4", "v5.0.0"),
    "actions/download-artifact": ("634f93cb2916e3fdff6788551b99b062d0335ce0", "v5.0.0"),
    "aws-actions/configure-aws-credentials": ("a03048d87541d1d9fcf2ecf528a4a65ba9bd7838", "v5.0.0"),
    "marocchino/sticky-pull-request-comment": ("0ea0beb66eb9baf113663a64ec522f60e49231c0", "v3.0.4"),
    "peter-evans/create-pull-request": ("98357b18bf14b5342f975ff684046ec3b2a07725", "v8.0.0"),
    "pulumi/actions": ("8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"),
}

# The only permissions a job may ask for, and why it may.
COMMENT_ACTIONS = {"marocchino/sticky-pull-request-comment", "pulumi/actions"}
PR_ACTION = "peter-evans/create-pull-request"
OIDC_ACTION = "aws-actions/configure-aws-credentials"

# Expressions whose value a pull request's author (or a branch name) controls.
UNTRUSTED = re.compile(
    r"github\.event\.|github\.head_ref|github\.ref_name|inputs\.|needs\.[^}]*outputs|steps\.[^}]*outputs"
)
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
STEP_KEYS_WITH_SCRIPTS = ("run",)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    on = workflow["on"] if "on" in workflow else workflow.get(True)
    assert isinstance(on, dict), "write `on:` as a mapping"
    return on


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.y*ml"))


def jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = workflow["jobs"]
    assert isinstance(result, dict)
    return result


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def action_name(ref: str) -> str:
    """`owner/repo[/path]@ref` -> `owner/repo[/path]`."""
    return ref.split("@", 1)[0]


def all_steps() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in workflow_files():
        for job_id, job in jobs(load(path)).items():
            for step in steps(job):
                yield path.name, job_id, step


def test_the_workflows_exist() -> None:
    names = {p.name for p in workflow_files()}
    assert names == {"pull-request.yml", "deploy-dev.yml", "promote.yml", "deploy-prod.yml", "retrain.yml"}


# ------------------------------------------------------------------ validators --


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_workflow_matches_the_github_workflow_schema(path: Path) -> None:
    exe = VENV_BIN / "check-jsonschema"
    assert exe.exists(), (
        f"{exe} missing: check-jsonschema is in requirements.txt (source scripts/setup-venv.sh)"
    )
    # The builtin schema is vendored in the package: no network.
    proc = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def actionlint_path() -> Path:
    proc = subprocess.run(
        [str(REPO / "scripts" / "bootstrap-actionlint"), "--print-path"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(f"actionlint is not built: run scripts/bootstrap-actionlint\n{proc.stderr}")
    return Path(proc.stdout.strip())


def test_workflows_pass_actionlint() -> None:
    exe = actionlint_path()
    version = subprocess.run([str(exe), "-version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.splitlines()[0] == "v1.7.12", version.stdout
    proc = subprocess.run(
        [str(exe), "-no-color", *[str(p.relative_to(REPO)) for p in workflow_files()]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really lints: an undefined job in `needs` and an unknown context fail."""
    exe = actionlint_path()
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    needs: nowhere\n    runs-on: ubuntu-24.04\n"
        "    permissions: {}\n    steps:\n      - run: echo ${{ github.nonsense.x }}\n"
    )
    proc = subprocess.run(
        [str(exe), "-no-color", str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nowhere" in proc.stdout


# ---------------------------------------------------------------------- pinning --


def uses_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, ref, trailing comment) of every `uses:` line, read from the raw text."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = USES_LINE.match(line)
        if match:
            found.append((number, match["ref"], (match["comment"] or "").strip()))
    return found


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_reviewed_commit_with_its_version(path: Path) -> None:
    lines = uses_lines(path)
    parsed = [step["uses"] for job in jobs(load(path)).values() for step in steps(job) if "uses" in step]
    parsed += [job["uses"] for job in jobs(load(path)).values() if "uses" in job]
    # Every `uses:` the YAML holds is one this line-based check saw (no flow-style hiding).
    assert sorted(parsed) == sorted(ref for _, ref, _ in lines)
    for number, ref, comment in lines:
        where = f"{path.name}:{number}: {ref}"
        if ref.startswith("./"):
            continue  # a local action or reusable workflow: pinned by this repository
        problem = pin_problem(ref, comment)
        assert problem is None, f"{where}: {problem}"


def pin_problem(ref: str, comment: str | None) -> str | None:
    """Why a `uses:` reference is not a reviewed pin (None when it is one)."""
    if ref.startswith("docker://"):
        return "use an action pinned by commit"
    match = re.fullmatch(r"(?P<name>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[^@]+)?)@(?P<sha>[0-9a-f]{40})", ref)
    if not match:
        return "pin to a full 40-hex commit SHA"
    if not re.fullmatch(r"v\d+\.\d+\.\d+", comment or ""):
        return "the version goes in a comment (# v1.2.3)"
    name = match["name"]
    if name not in REVIEWED_PINS:
        return f"{name} is not among the reviewed actions"
    if (match["sha"], comment) != REVIEWED_PINS[name]:
        return f"not the reviewed pin of {name}"
    return None


def test_the_pinning_check_refuses_tags_and_short_shas(tmp_path: Path) -> None:
    sha, version = REVIEWED_PINS["actions/checkout"]
    samples = {
        "uses: actions/checkout@v6": "pin to a full 40-hex commit SHA",
        f"uses: actions/checkout@{sha[:7]} # {version}": "pin to a full 40-hex commit SHA",
        f"uses: actions/checkout@{sha}": "the version goes in a comment (# v1.2.3)",
        f"uses: actions/checkout@{'0' * 40} # {version}": "not the reviewed pin of actions/checkout",
        "uses: docker://alpine:3": "use an action pinned by commit",
        f"- uses: actions/checkout@{sha} # {version}": None,
    }
    for line, problem in samples.items():
        match = USES_LINE.match(line)
        assert match, line
        assert pin_problem(match["ref"], match["comment"]) == problem, line


def test_pulumi_cli_version_matches_the_python_sdk_pin() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for workflow, job_id, step in all_steps():
        if action_name(step.get("uses", "")) == "pulumi/actions":
            assert str(step["with"]["pulumi-version"]) == pins["pulumi"], f"{workflow}/{job_id}"


# ------------------------------------------------------------------ permissions --


def job_actions(job: dict[str, Any]) -> set[str]:
    return {action_name(step["uses"]) for step in steps(job) if "uses" in step}


def comments(step: dict[str, Any]) -> bool:
    """The step writes a pull-request comment (the sticky comment, or pulumi/actions asked to)."""
    name = action_name(step.get("uses", ""))
    if name == "pulumi/actions":
        return (step.get("with") or {}).get("comment-on-pr") is True
    return name in COMMENT_ACTIONS


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_permissions_are_declared_and_least_privilege(path: Path) -> None:
    workflow = load(path)
    text = path.read_text(encoding="utf-8")
    assert "write-all" not in text and "read-all" not in text, path.name
    # Nothing at the top: every job says what it needs.
    assert workflow.get("permissions") == {}, f"{path.name}: top-level `permissions: {{}}`"
    for job_id, job in jobs(workflow).items():
        where = f"{path.name}/{job_id}"
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{where}: declare `permissions:` as a mapping"
        actions = job_actions(job)
        allowed_write = set()
        if any(comments(step) for step in steps(job)) or PR_ACTION in actions:
            allowed_write.add("pull-requests")
        if PR_ACTION in actions:
            allowed_write.add("contents")
        if OIDC_ACTION in actions:
            allowed_write.add("id-token")
        for scope, level in perms.items():
            assert scope in {"contents", "pull-requests", "id-token"}, f"{where}: {scope} not needed"
            assert level in {"read", "write", "none"}, f"{where}: {scope}: {level}"
            if level == "write":
                assert scope in allowed_write, f"{where}: {scope}: write without a step that needs it"
        if "actions/checkout" in actions:
            assert perms.get("contents") in {"read", "write"}, f"{where}: checkout needs contents: read"
        # A write permission that no step uses is also too much: the reverse direction.
        for scope in allowed_write:
            assert perms.get(scope) == "write", f"{where}: {scope}: write is needed by a step"


def test_only_the_pull_request_jobs_of_promotion_and_retraining_may_push() -> None:
    writers = {
        (path.name, job_id)
        for path in workflow_files()
        for job_id, job in jobs(load(path)).items()
        if (job.get("permissions") or {}).get("contents") == "write"
    }
    assert writers == {("promote.yml", "pull-request"), ("retrain.yml", "pull-request")}
    # ... and those jobs hold no cloud credentials.
    for workflow, job_id in writers:
        job = jobs(load(WORKFLOWS / workflow))[job_id]
        assert OIDC_ACTION not in job_actions(job)
        assert "id-token" not in job["permissions"]
        assert "environment" not in job  # no environment's secrets either


# ---------------------------------------------------------- untrusted text & run --


def run_steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [(w, j, s) for w, j, s in all_steps() if "run" in s]


def test_no_expression_is_expanded_inside_a_run_script() -> None:
    assert run_steps()
    for workflow, job_id, step in run_steps():
        # Not only github.event.*: no `${{ }}` at all, so nothing a pull request controls (a
        # title, a branch name, an input) can become shell code. Values come through `env:`.
        assert "${{" not in step["run"], f"{workflow}/{job_id}: {step['run']!r}"
        assert "github.event" not in step["run"] and "head_ref" not in step["run"]


def test_untrusted_values_reach_scripts_only_through_env() -> None:
    """Where a step needs PR-controlled or user-typed text, it is an `env:` value (quoted by
    the runner), never part of a command line; and no trigger runs untrusted code with secrets."""
    for path in workflow_files():
        on = triggers(load(path))
        assert "pull_request_target" not in on and "workflow_run" not in on, path.name
    seen = False
    for workflow, job_id, step in all_steps():
        for key in STEP_KEYS_WITH_SCRIPTS:
            assert not UNTRUSTED.search(str(step.get(key, ""))), f"{workflow}/{job_id}"
        if "run" in step:
            for value in (step.get("env") or {}).values():
                seen = seen or bool(UNTRUSTED.search(str(value)))
    assert seen, "expected at least one untrusted value passed through env (DIFF_AGAINST, RELEASE_ID)"


def test_every_run_step_calls_one_executable_script_under_scripts_ci() -> None:
    called = set()
    for workflow, job_id, step in run_steps():
        command = step["run"].strip()
        assert re.fullmatch(r"scripts/ci/[a-z0-9-]+\.sh", command), f"{workflow}/{job_id}: {command!r}"
        script = REPO / command
        assert script.is_file(), f"{workflow}/{job_id}: {command} does not exist"
        assert script.stat().st_mode & stat.S_IXUSR, f"{command} is not executable"
        called.add(script.name)
    for script in sorted(CI_SCRIPTS.glob("*.sh")):
        text = script.read_text(encoding="utf-8")
        if script.stat().st_mode & stat.S_IXUSR:
            assert text.startswith("#!/usr/bin/env bash\n"), script.name
            assert "\nset -euo pipefail\n" in text, script.name
            assert script.name in called, f"{script.name} is not called by any workflow"
        else:
            assert script.name == "common.sh", f"{script.name}: a script under scripts/ci must be executable"


def test_credentials_come_from_secrets_or_oidc_never_from_the_repo() -> None:
    credential = re.compile(r"TOKEN|PASSPHRASE|PASSWORD|SECRET_ACCESS|KUBECONFIG_DATA")
    for path in workflow_files():
        workflow = load(path)
        for job_id, job in jobs(workflow).items():
            envs = [job.get("env") or {}] + [s.get("env") or {} for s in steps(job)]
            for env in envs:
                for key, value in env.items():
                    if credential.search(key):
                        assert re.fullmatch(r"\$\{\{ secrets\.[A-Z0-9_]+ \}\}", str(value)), (
                            f"{path.name}/{job_id}: {key} must come from a GitHub secret"
                        )
            for step in steps(job):
                if action_name(step.get("uses", "")) == OIDC_ACTION:
                    assert "role-to-assume" in step["with"], f"{path.name}/{job_id}: OIDC role"
                    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"])


# -------------------------------------------------------- what each workflow does --


def step_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if action_name(s.get("uses", "")) == action]


def step_running(job: dict[str, Any], script: str) -> dict[str, Any]:
    matches = [s for s in steps(job) if s.get("run", "").strip() == f"scripts/ci/{script}"]
    assert len(matches) == 1, script
    return matches[0]


def test_pull_request_workflow_previews_both_stacks_and_comments() -> None:
    workflow = load(WORKFLOWS / "pull-request.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    preview = jobs(workflow)["preview"]
    previews = step_using(preview, "pulumi/actions")
    assert [p["with"]["stack-name"].removeprefix("${{ vars.PULUMI_STACK_PREFIX }}") for p in previews] == [
        "dev",
        "prod",
    ]
    for p in previews:
        assert p["with"]["command"] == "preview"
        assert p["with"]["comment-on-pr"] is True and p["with"]["diff"] is True
    # Forks get no secrets: the credentialed job runs for this repository's branches only.
    assert "head.repo.full_name == github.repository" in preview["if"]


def test_pull_request_diff_job_is_credential_free() -> None:
    workflow_text = (WORKFLOWS / "pull-request.yml").read_text(encoding="utf-8")
    job = jobs(load(WORKFLOWS / "pull-request.yml"))["render-diff"]
    assert "secrets." not in yaml.safe_dump(job)
    assert "id-token" not in job["permissions"]
    assert "if" not in job  # runs for forks too
    diff = step_running(job, "diff-comment.sh")
    assert diff["env"]["STACKS"] == "dev prod"
    comment = step_using(job, "marocchino/sticky-pull-request-comment")
    assert len(comment) == 1 and comment[0]["with"]["path"] == diff["env"]["COMMENT_FILE"]
    render = step_running(job, "check-render.sh")
    assert render["env"]["STACKS"] == "dev prod"
    assert "fetch-depth: 0" in workflow_text


def test_deploy_workflows() -> None:
    dev = load(WORKFLOWS / "deploy-dev.yml")
    assert triggers(dev)["push"]["branches"] == ["main"]
    (up,) = step_using(jobs(dev)["up"], "pulumi/actions")
    assert up["with"]["command"] == "up" and up["with"]["stack-name"].endswith("}}dev")

    prod = load(WORKFLOWS / "deploy-prod.yml")
    push = triggers(prod)["push"]
    assert push["branches"] == ["main"] and push["paths"] == ["Pulumi.prod.yaml"]
    job = jobs(prod)["up"]
    assert job["environment"] == "production"
    (up,) = step_using(job, "pulumi/actions")
    assert up["with"]["command"] == "up" and up["with"]["stack-name"].endswith("}}prod")
    for workflow in (dev, prod):
        assert workflow["concurrency"]["cancel-in-progress"] is False


def test_promotion_workflow() -> None:
    workflow = load(WORKFLOWS / "promote.yml")
    on = triggers(workflow)
    assert set(on) == {"workflow_dispatch"}
    release = on["workflow_dispatch"]["inputs"]["release"]
    assert release["required"] is False and release["type"] == "string"
    promote = jobs(workflow)["promote"]
    step = step_running(promote, "promote.sh")
    assert step["env"]["SRC_STACK"] == "dev" and step["env"]["DST_STACK"] == "prod"
    assert step["env"]["RELEASE_ID"] == "${{ inputs.release }}"
    pr = jobs(workflow)["pull-request"]
    assert pr["needs"] == "promote"
    step_running(pr, "apply-promotion.sh")
    (create,) = step_using(pr, PR_ACTION)
    assert create["with"]["add-paths"] == "Pulumi.prod.yaml"


# ------------------------------------------------------- the scripts, run for real --


def ci_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a workflow step gives a script: the venv first on PATH (as setup.sh
    leaves it), RUNNER_TEMP, GITHUB_OUTPUT/ENV/PATH/STEP_SUMMARY files, and the step's env."""
    runner = tmp_path / "runner"
    runner.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "MLOPS"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        CI="true",
        RUNNER_TEMP=str(runner),
        GITHUB_OUTPUT=str(runner / "output"),
        GITHUB_ENV=str(runner / "env"),
        GITHUB_PATH=str(runner / "path"),
        GITHUB_STEP_SUMMARY=str(runner / "summary.md"),
    )
    env.update(extra)
    return env


def run_script(
    name: str, cwd: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CI_SCRIPTS / name)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def outputs(env: dict[str, str]) -> dict[str, str]:
    path = Path(env["GITHUB_OUTPUT"])
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of the repository at HEAD, like the workflow's checkout (history included)."""
    dest = tmp_path / "checkout"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO), str(dest)], check=True, timeout=120)
    git(dest, "config", "user.email", "ci-test@example.invalid")
    git(dest, "config", "user.name", "ci test")
    return dest


def current_pin(checkout: Path) -> dict[str, Any]:
    pin = load(checkout / "Pulumi.prod.yaml")["config"]["mlops:release"]
    assert isinstance(pin, dict)
    return pin


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, timeout=60
    ).stdout


def test_setup_script_puts_the_venv_on_the_path(tmp_path: Path) -> None:
    venv = VENV_BIN.parent
    # setup.sh installs when requirements changed; here (no network) they must be installed.
    files = [
        REPO / "requirements.txt",
        *sorted((REPO / "images/requirements").glob("*.txt")),
        REPO / "pyproject.toml",
    ]
    want = sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = venv / ".mlops-requirements.sha256"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.fail(f"{venv} does not match requirements.txt: run `source scripts/setup-venv.sh` first")
    env = ci_env(tmp_path, MLOPS_VENV=str(venv))
    proc = run_script("setup.sh", REPO, env)
    assert proc.returncode == 0, proc.stderr
    assert Path(env["GITHUB_PATH"]).read_text().splitlines() == [str(VENV_BIN)]


def test_kubeconfig_script(tmp_path: Path) -> None:
    config = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: https://k8s.invalid}\n"
    env = ci_env(tmp_path, KUBECONFIG_DATA=config, KUBECONFIG_SECRET="PREVIEW_KUBECONFIG")
    proc = run_script("kubeconfig.sh", REPO, env)
    assert proc.returncode == 0, proc.stderr
    (line,) = Path(env["GITHUB_ENV"]).read_text().splitlines()
    key, _, path = line.partition("=")
    assert key == "KUBECONFIG" and Path(path).read_text() == config
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert Path(path).is_relative_to(Path(env["RUNNER_TEMP"]))
    assert "https://k8s.invalid" not in proc.stderr + proc.stdout  # never logged

    missing = run_script(
        "kubeconfig.sh", REPO, ci_env(tmp_path / "m", KUBECONFIG_SECRET="PREVIEW_KUBECONFIG")
    )
    assert missing.returncode == 2 and "PREVIEW_KUBECONFIG" in missing.stderr
    junk = run_script("kubeconfig.sh", REPO, ci_env(tmp_path / "j", KUBECONFIG_DATA="not a kubeconfig"))
    assert junk.returncode == 1 and "does not look like a kubeconfig" in junk.stderr


@pytest.mark.slow
def test_check_render_script_passes_both_stacks(checkout: Path, tmp_path: Path) -> None:
    render_dir = tmp_path / "runner" / "mlops-render"
    env = ci_env(tmp_path, STACKS="dev prod", RENDER_DIR=str(render_dir))
    proc = run_script("check-render.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    for stack in ("dev", "prod"):
        assert (render_dir / stack / "resources.yaml").is_file()
        assert list((render_dir / stack / "manifests").rglob("*.yaml"))
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "| `dev` | passes |" in summary and "| `prod` | passes |" in summary
    assert not git(checkout, "status", "--porcelain")  # the checkout is left as it was


@pytest.mark.slow
def test_check_render_script_fails_on_a_policy_violation(checkout: Path, tmp_path: Path) -> None:
    # A prod pin whose release failed its gates: the release-gates-passed policy refuses it.
    prod = checkout / "Pulumi.prod.yaml"
    text = prod.read_text()
    assert current_pin(checkout)["gates"] == "passed" and "    gates: passed\n" in text
    prod.write_text(text.replace("    gates: passed\n", "    gates: failed\n", 1))
    env = ci_env(tmp_path, STACKS="dev prod", RENDER_DIR=str(tmp_path / "render"))
    proc = run_script("check-render.sh", checkout, env)
    assert proc.returncode == 1, proc.stderr
    assert "violations (or no render) in: prod" in proc.stderr
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "| `dev` | passes |" in summary and "| `prod` | **fails**" in summary


def test_check_render_script_refuses_bad_input(tmp_path: Path) -> None:
    for stacks, message in (("dev qa", "no stack file Pulumi.qa.yaml"), ("dev;id", "not a stack name")):
        proc = run_script("check-render.sh", REPO, ci_env(tmp_path, STACKS=stacks))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def fake_mlops(tmp_path: Path, body: str) -> Path:
    """An `mlops` stand-in (a Python script) for the scripts' own logic: exit codes, files."""
    path = tmp_path / "fake-bin" / "mlops"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport os, sys\n{body}")
    path.chmod(0o755)
    return path


FAKE_DIFF = """
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args == ["diff", "--help"]:
    sys.exit(0)
stack = args[args.index("--stack") + 1]
code = int(os.environ.get("FAKE_EXIT_" + stack, "0"))
if code == 1:
    print("render failed: Pulumi." + stack + ".yaml: boom", file=sys.stderr)
else:
    print("#### " + stack + ": " + os.environ.get("FAKE_BODY_" + stack, "no changes"))
sys.exit(code)
"""


def test_diff_comment_script_maps_exit_codes_and_writes_the_comment(tmp_path: Path, checkout: Path) -> None:
    mlops = fake_mlops(tmp_path, FAKE_DIFF)
    comment = tmp_path / "runner" / "mlops-diff.md"
    base = git(checkout, "rev-parse", "HEAD").strip()
    env = ci_env(
        tmp_path,
        MLOPS=str(mlops),
        FAKE_LOG=str(tmp_path / "calls"),
        STACKS="dev prod",
        DIFF_AGAINST=base,
        COMMENT_FILE=str(comment),
        FAKE_EXIT_dev="2",
        FAKE_BODY_dev="~ Deployment breast-cancer",
    )
    proc = run_script("diff-comment.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    body = comment.read_text()
    assert "| `dev` | changes |" in body and "#### dev: ~ Deployment breast-cancer" in body
    assert "| `prod` | no changes |" in body and "#### prod: no changes" in body
    assert f"`{base[:12]}`" in body
    assert outputs(env) == {"changed_stacks": "dev", "failed_stacks": ""}
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[1:] == [
        f"diff --stack dev --against {base} --format markdown",
        f"diff --stack prod --against {base} --format markdown",
    ]

    # A failing diff: the comment still names both stacks and shows the error; the step fails.
    env.update(FAKE_EXIT_prod="1", GITHUB_OUTPUT=str(tmp_path / "output2"))
    proc = run_script("diff-comment.sh", checkout, env)
    assert proc.returncode == 1 and "mlops diff failed for: prod" in proc.stderr
    body = comment.read_text()
    assert "| `prod` | **diff failed** (exit 1) |" in body
    assert "### Stack `prod`: diff failed (exit 1)" in body and "boom" in body
    assert "| `dev` | changes |" in body and "#### dev: ~ Deployment breast-cancer" in body


@pytest.mark.slow
def test_diff_comment_script_with_the_real_mlops_diff(tmp_path: Path, checkout: Path) -> None:
    """As the pull-request workflow runs it: a change to dev's training spec, committed on top
    of the base commit, diffed for both stacks against that base."""
    base = git(checkout, "rev-parse", "HEAD").strip()
    dev = checkout / "Pulumi.dev.yaml"
    spec = load(dev)["config"]["mlops:training"]
    trees = spec["params"]["n_estimators"]
    text = dev.read_text()
    assert f"      n_estimators: {trees}\n" in text
    dev.write_text(text.replace(f"      n_estimators: {trees}\n", f"      n_estimators: {trees + 20}\n", 1))
    git(checkout, "commit", "--quiet", "-am", "dev: more trees")
    comment = tmp_path / "runner" / "mlops-diff.md"
    env = ci_env(tmp_path, STACKS="dev prod", DIFF_AGAINST=base, COMMENT_FILE=str(comment))
    proc = run_script("diff-comment.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    body = comment.read_text()
    assert "| `dev` | changes |" in body and "| `prod` | no changes |" in body
    assert f"`{base[:12]}`" in body
    # mlops diff's own sections, one per stack: the new release for dev, nothing for prod.
    assert "stack dev" in body and "stack prod" in body
    assert "replace" in body and "train-" in body
    assert outputs(env) == {"changed_stacks": "dev", "failed_stacks": ""}
    assert len(body) < 65536


def test_diff_comment_script_cuts_long_diffs(tmp_path: Path, checkout: Path) -> None:
    mlops = fake_mlops(tmp_path, FAKE_DIFF)
    comment = tmp_path / "c.md"
    env = ci_env(
        tmp_path,
        MLOPS=str(mlops),
        FAKE_LOG=str(tmp_path / "calls"),
        STACKS="dev",
        COMMENT_FILE=str(comment),
        FAKE_EXIT_dev="2",
        FAKE_BODY_dev="x" * 5000,
        MAX_STACK_CHARS="1000",
    )
    proc = run_script("diff-comment.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    body = comment.read_text()
    assert "cut at 1000 characters" in body and len(body) < 2500


def test_diff_comment_script_refuses_bad_input(tmp_path: Path, checkout: Path) -> None:
    mlops = fake_mlops(tmp_path, FAKE_DIFF)
    base = ci_env(tmp_path, MLOPS=str(mlops), FAKE_LOG=str(tmp_path / "calls"))
    cases = [
        ({}, 2, "COMMENT_FILE is not set"),
        ({"COMMENT_FILE": "c.md", "DIFF_AGAINST": "main; rm -rf /"}, 2, "not a git revision"),
        ({"COMMENT_FILE": "c.md", "DIFF_AGAINST": "f" * 40}, 2, "not a commit in this checkout"),
        ({"COMMENT_FILE": "c.md", "STACKS": "dev $(id)"}, 2, "not a stack name"),
    ]
    for extra, code, message in cases:
        proc = run_script("diff-comment.sh", checkout, {**base, **extra})
        assert proc.returncode == code and message in proc.stderr, (extra, proc.stderr)
    assert not (tmp_path / "calls").exists()  # refused before any mlops call
    # An mlops without the diff command is an error, not "changes" (exit 2 from the CLI parser).
    old = fake_mlops(tmp_path / "old", "sys.exit(2)\n")
    proc = run_script("diff-comment.sh", checkout, {**base, "MLOPS": str(old), "COMMENT_FILE": "c.md"})
    assert proc.returncode == 1 and "is not available" in proc.stderr


# A stand-in for `mlops promote` that writes a pin the way the real one does (only the pin's
# values change) or fails, recording its arguments.
FAKE_PROMOTE = """
import re
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if os.environ.get("FAKE_FAIL"):
    print("copy: destination store unreachable", file=sys.stderr)
    sys.exit(3)
if os.environ.get("FAKE_NOOP"):
    print("prod already serves that release: nothing to do")
    sys.exit(0)
release = args[args.index("--release") + 1] if "--release" in args else "abcdef012345"
path = "Pulumi." + args[2] + ".yaml"
text = open(path).read()
text = re.sub(r"release_id: \\w+", "release_id: " + release, text, count=1)
text = re.sub(r'model_version: "\\d+"', 'model_version: "8"', text, count=1)
open(path, "w").write(text)
print("promoted " + release + " from " + args[1] + " to " + args[2])
"""


def promote_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    mlops = fake_mlops(tmp_path, FAKE_PROMOTE)
    return ci_env(
        tmp_path,
        MLOPS=str(mlops),
        FAKE_LOG=str(tmp_path / "calls"),
        SRC_STACK="dev",
        DST_STACK="prod",
        OUT_DIR=str(tmp_path / "runner" / "promotion"),
        **extra,
    )


def test_promote_script_hands_the_pin_to_the_pull_request_job(tmp_path: Path, checkout: Path) -> None:
    env = promote_env(tmp_path, RELEASE_ID="0a1b2c3d4e5f")
    before = (checkout / "Pulumi.prod.yaml").read_text()
    old = current_pin(checkout)
    proc = run_script("promote.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text() == "promote dev prod --yes --release 0a1b2c3d4e5f\n"
    out = outputs(env)
    assert out["changed"] == "true" and out["release_id"] == "0a1b2c3d4e5f" and out["model_version"] == "8"
    assert out["branch"] == "promote/dev-to-prod"
    assert out["title"] == "Promote breast-cancer release 0a1b2c3d4e5f (version 8) from dev to prod"
    handed = Path(env["OUT_DIR"])
    body = (handed / "pr-body.md").read_text()
    assert "+    release_id: 0a1b2c3d4e5f" in body and "promoted 0a1b2c3d4e5f" in body
    assert (handed / "Pulumi.prod.yaml").read_text() == (checkout / "Pulumi.prod.yaml").read_text()

    # The pull-request job: a fresh checkout takes the handed-over file.
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO), str(fresh)], check=True, timeout=120)
    assert (fresh / "Pulumi.prod.yaml").read_text() == before
    apply_env = ci_env(
        tmp_path / "apply", PROMOTION_DIR=str(handed), RELEASE_ID="0a1b2c3d4e5f", DST_STACK="prod"
    )
    proc = run_script("apply-promotion.sh", fresh, apply_env)
    assert proc.returncode == 0, proc.stderr
    assert (fresh / "Pulumi.prod.yaml").read_text() == (handed / "Pulumi.prod.yaml").read_text()
    changed = [line for line in git(fresh, "diff", "--unified=0").splitlines() if line[:1] in "+-"]
    assert sorted(changed) == sorted(
        [
            "--- a/Pulumi.prod.yaml",
            "+++ b/Pulumi.prod.yaml",
            f"-    release_id: {old['release_id']}",
            "+    release_id: 0a1b2c3d4e5f",
            f'-    model_version: "{old["model_version"]}"',
            '+    model_version: "8"',
        ]
    )


def test_promote_script_with_the_real_mlops_promote_refuses_an_unproven_release(
    tmp_path: Path, checkout: Path
) -> None:
    """The real command, credential-free: dev's registry (the NodePort of a dev cluster, which
    is not running here) cannot be reached, so promote refuses within seconds; the script
    passes that on and hands nothing to the pull-request job."""
    before = (checkout / "Pulumi.prod.yaml").read_bytes()
    env = ci_env(tmp_path, OUT_DIR=str(tmp_path / "runner" / "promotion"), RELEASE_ID="0a1b2c3d4e5f")
    proc = run_script("promote.sh", checkout, env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "mlops promote dev prod --yes --release 0a1b2c3d4e5f" in proc.stderr
    assert "mlops promote dev prod failed (exit 1)" in proc.stderr
    assert outputs(env) == {}
    assert not (Path(env["OUT_DIR"]) / "pr-body.md").exists()
    assert (checkout / "Pulumi.prod.yaml").read_bytes() == before
    assert not git(checkout, "status", "--porcelain")


def test_apply_promotion_refuses_a_file_that_changes_more_than_the_pin(
    tmp_path: Path, checkout: Path
) -> None:
    handed = tmp_path / "promotion"
    handed.mkdir()
    (handed / "pr-body.md").write_text("body")
    text = (checkout / "Pulumi.prod.yaml").read_text()
    pinned = text.replace(f"release_id: {current_pin(checkout)['release_id']}", "release_id: 0a1b2c3d4e5f")
    assert pinned != text
    cases = {
        "config key mlops:extra differs": pinned.replace("\nconfig:\n", "\nconfig:\n  mlops:extra: 1\n", 1),
        "expected '0a1b2c3d4e5f'": text,
    }
    for message, content in cases.items():
        (handed / "Pulumi.prod.yaml").write_text(content)
        env = ci_env(tmp_path, PROMOTION_DIR=str(handed), RELEASE_ID="0a1b2c3d4e5f")
        proc = run_script("apply-promotion.sh", checkout, env)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert (checkout / "Pulumi.prod.yaml").read_text() == text  # untouched


def test_promote_script_validates_the_release_id_before_anything(tmp_path: Path, checkout: Path) -> None:
    for bad in ("0123", "0123456789AB", "$(id)", "0123456789ab; true", "../../etc"):
        env = promote_env(tmp_path, RELEASE_ID=bad)
        proc = run_script("promote.sh", checkout, env)
        assert proc.returncode == 2 and "12 lowercase hex characters" in proc.stderr, (bad, proc.stderr)
    assert not (tmp_path / "calls").exists()
    assert not git(checkout, "status", "--porcelain")


def test_promote_script_without_release_and_when_nothing_changes(tmp_path: Path, checkout: Path) -> None:
    env = promote_env(tmp_path, FAKE_NOOP="1")
    proc = run_script("promote.sh", checkout, env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text() == "promote dev prod --yes\n"
    assert outputs(env) == {"changed": "false"}
    assert not (Path(env["OUT_DIR"]) / "pr-body.md").exists()


def test_promote_script_passes_on_the_failure_of_mlops_promote(tmp_path: Path, checkout: Path) -> None:
    env = promote_env(tmp_path, FAKE_FAIL="1")
    proc = run_script("promote.sh", checkout, env)
    assert proc.returncode == 3, proc.stderr
    assert "destination store unreachable" in proc.stderr and "failed (exit 3)" in proc.stderr
    assert outputs(env) == {}
    assert not git(checkout, "status", "--porcelain")


def test_ci_scripts_are_shell_only_entry_points() -> None:
    """Nothing under scripts/ci but the scripts and their helpers (common.sh sourced,
    stack_change.py run by the apply scripts)."""
    names = {p.name for p in CI_SCRIPTS.iterdir()}
    assert names == {
        "common.sh",
        "setup.sh",
        "kubeconfig.sh",
        "check-render.sh",
        "diff-comment.sh",
        "promote.sh",
        "apply-promotion.sh",
        "retrain-bump.sh",
        "apply-retrain.sh",
        "stack_change.py",
    }


# ------------------------------------------------------------------- retraining --


def test_retrain_workflow() -> None:
    workflow = load(WORKFLOWS / "retrain.yml")
    assert triggers(workflow) == {"repository_dispatch": {"types": ["mlops-retrain"]}}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    bump = jobs(workflow)["bump"]
    assert bump["permissions"] == {"contents": "read", "id-token": "write"}
    step = step_running(bump, "retrain-bump.sh")
    assert step["env"]["STACK"] == "dev" and step["id"] == "bump"
    assert set(bump["outputs"]) == {"changed", "dataset", "title", "branch"}
    pr = jobs(workflow)["pull-request"]
    assert pr["needs"] == "bump" and "needs.bump.outputs.changed == 'true'" in pr["if"]
    assert pr["permissions"] == {"contents": "write", "pull-requests": "write"}
    apply = step_running(pr, "apply-retrain.sh")
    assert apply["env"]["DATASET"] == "${{ needs.bump.outputs.dataset }}"
    (create,) = step_using(pr, PR_ACTION)
    assert create["with"]["add-paths"] == "Pulumi.dev.yaml"
    assert create["with"]["branch"] == "${{ needs.bump.outputs.branch }}"
    assert create["with"]["body-path"].endswith("/retrain/pr-body.md")


@pytest.mark.slow
def test_retrain_bump_script_hands_the_new_dataset_to_the_pull_request_job(
    tmp_path: Path, checkout: Path
) -> None:
    """As retrain.yml runs it, with the real `mlops retrain-bump` and dataset versions in a folder."""
    folder = write_versions(tmp_path / "datasets")
    enable_retrain(checkout / "Pulumi.dev.yaml", f"{folder}/")
    git(checkout, "commit", "--quiet", "-am", "dev: retrain on drift")  # a clean checkout, as in CI
    out_dir = tmp_path / "runner" / "retrain"
    env = ci_env(
        tmp_path,
        STACK="dev",
        OUT_DIR=str(out_dir),
        GITHUB_EVENT_PATH=str(write_event(tmp_path / "event.json")),
    )
    proc = run_script("retrain-bump.sh", checkout, env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    newest = f"{folder}/{NEWEST}"
    assert outputs(env) == {
        "changed": "true",
        "dataset": newest,
        "branch": "retrain/dev/breast-cancer",
        "title": "Retrain breast-cancer on data.parquet (dev, drift in release 0123456789ab)",
    }
    body = (out_dir / "pr-body.md").read_text()
    assert "`4f1c2a9e0b7d3c55`" in body and "`mean radius`" in body and "569 rows" in body
    assert f"+    dataset: {newest}" in body
    assert (out_dir / "Pulumi.dev.yaml").read_text() == (checkout / "Pulumi.dev.yaml").read_text()

    # The pull-request job: a fresh checkout takes the handed-over file; one line changes.
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "--quiet", str(checkout), str(fresh)], check=True, timeout=120)
    apply_env = ci_env(tmp_path / "apply", RETRAIN_DIR=str(out_dir), DATASET=newest, STACK="dev")
    proc = run_script("apply-retrain.sh", fresh, apply_env)
    assert proc.returncode == 0, proc.stderr
    changed = [line for line in git(fresh, "diff", "--unified=0").splitlines() if line[:1] in "+-"]
    assert changed == [
        "--- a/Pulumi.dev.yaml",
        "+++ b/Pulumi.dev.yaml",
        "-    dataset: sklearn:breast_cancer",
        f"+    dataset: {newest}",
    ]

    # Merged, the same alert again: nothing newer, no pull request.
    git(checkout, "commit", "--quiet", "-am", "retrain")
    again = ci_env(
        tmp_path / "again", OUT_DIR=str(tmp_path / "again-out"), GITHUB_EVENT_PATH=env["GITHUB_EVENT_PATH"]
    )
    proc = run_script("retrain-bump.sh", checkout, again, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nothing newer" in proc.stderr
    assert outputs(again) == {"changed": "false"}
    assert not (tmp_path / "again-out" / "pr-body.md").exists()
    assert not git(checkout, "status", "--porcelain")


def test_retrain_bump_script_passes_on_a_failure_and_refuses_bad_input(
    tmp_path: Path, checkout: Path
) -> None:
    mlops = fake_mlops(
        tmp_path, 'print("the newest dataset cannot be trained on", file=sys.stderr)\nsys.exit(2)\n'
    )
    event_path = str(write_event(tmp_path / "event.json"))
    base = ci_env(tmp_path, MLOPS=str(mlops), OUT_DIR=str(tmp_path / "out"), GITHUB_EVENT_PATH=event_path)
    proc = run_script("retrain-bump.sh", checkout, base)
    assert proc.returncode == 2 and "cannot be trained on" in proc.stderr
    assert "mlops retrain-bump failed (exit 2)" in proc.stderr
    assert outputs(base) == {}
    cases = [
        ({"OUT_DIR": ""}, "OUT_DIR is not set"),
        ({"GITHUB_EVENT_PATH": ""}, "GITHUB_EVENT_PATH is not set"),
        ({"GITHUB_EVENT_PATH": str(tmp_path / "nope.json")}, "does not exist"),
        ({"STACK": "dev;id"}, "not a stack name"),
        ({"STACK": "qa"}, "no stack file Pulumi.qa.yaml"),
    ]
    for extra, message in cases:
        proc = run_script("retrain-bump.sh", checkout, {**base, **extra})
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
    assert not git(checkout, "status", "--porcelain")


def test_apply_retrain_refuses_a_file_that_changes_more_than_the_dataset(
    tmp_path: Path, checkout: Path
) -> None:
    handed = tmp_path / "retrain"
    handed.mkdir()
    (handed / "pr-body.md").write_text("body")
    text = (checkout / "Pulumi.dev.yaml").read_text()
    bumped = text.replace("dataset: sklearn:breast_cancer", "dataset: s3://data/cancer/v2.csv", 1)
    assert bumped != text
    trees = load(checkout / "Pulumi.dev.yaml")["config"]["mlops:training"]["params"]["n_estimators"]
    cases = {
        "mlops:training.params differs": bumped.replace(
            f"n_estimators: {trees}", f"n_estimators: {trees + 1}"
        ),
        "config key mlops:extra differs": bumped.replace("\nconfig:\n", "\nconfig:\n  mlops:extra: 1\n", 1),
        "expected 's3://data/cancer/v2.csv'": text,
    }
    for message, content in cases.items():
        (handed / "Pulumi.dev.yaml").write_text(content)
        env = ci_env(tmp_path, RETRAIN_DIR=str(handed), DATASET="s3://data/cancer/v2.csv")
        proc = run_script("apply-retrain.sh", checkout, env)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert (checkout / "Pulumi.dev.yaml").read_text() == text  # untouched
    (handed / "Pulumi.dev.yaml").write_text(bumped)
    proc = run_script("apply-retrain.sh", checkout, ci_env(tmp_path, RETRAIN_DIR=str(handed)))
    assert proc.returncode == 2 and "DATASET is not set" in proc.stderr
