"""Where `mlops diff` gets its two renders: the working tree's, and the "before" side from a git
revision (exported with `git archive` and rendered by that revision's own code) or from a
folder that `mlops render --out` wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from components.common import REPO_ROOT
from infra.config import PROJECT_FILE, ConfigError, read_stack_config
from infra.diff import DiffError, PlanDiff, diff_renders
from infra.render import RenderedResource, RenderResult, run_program

__all__ = ["diff_stack", "load_render", "merge_base", "render_at", "resolve_revision"]


def load_render(folder: Path, stack: str) -> RenderResult:
    """A folder written by `mlops render --out`, read back for a diff."""
    source = folder / "resources.yaml"
    if not source.is_file():
        raise DiffError(f"{folder} is not a folder written by `mlops render --out` (no resources.yaml)")
    try:
        listing = yaml.safe_load(source.read_text()) or {}
        outputs_file = folder / "outputs.yaml"
        outputs = (yaml.safe_load(outputs_file.read_text()) if outputs_file.is_file() else None) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DiffError(f"cannot read the render in {folder}: {' '.join(str(exc).split())}") from None
    if listing.get("stack") != stack:
        raise DiffError(f"{folder} holds a render of stack {listing.get('stack')!r}, not {stack!r}")
    resources = [
        RenderedResource(
            type=str(entry["type"]),
            name=str(entry["name"]),
            parent=entry.get("parent"),
            custom=bool(entry.get("custom", True)),
            inputs=entry.get("inputs") or {},
            ignore_changes=list(entry.get("ignore_changes") or []),
        )
        for entry in listing.get("resources") or []
    ]
    return RenderResult(stack=stack, out_dir=folder, resources=resources, outputs=outputs)


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiffError(f"git {' '.join(args)} failed in {root}: {exc}") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise DiffError(f"git {' '.join(args)} failed in {root}: {detail}")
    return done.stdout.strip()


def _repository(root: Path) -> Path:
    try:
        return Path(_git(root, "rev-parse", "--show-toplevel"))
    except DiffError:
        raise DiffError(f"{root} is not in a git repository: pass --against DIR (a saved render)") from None


def resolve_revision(root: Path, rev: str) -> str:
    """The commit a revision names, or a DiffError that says it does not exist."""
    _repository(root)
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except DiffError:
        raise DiffError(f"unknown git revision {rev!r} in {root}") from None


def merge_base(root: Path) -> tuple[str, str]:
    """(ref, commit): the merge base of HEAD with origin/main when it exists, else main."""
    _repository(root)
    for ref in ("origin/main", "main"):
        try:
            _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except DiffError:
            continue
        return ref, _git(root, "merge-base", "HEAD", ref)
    raise DiffError(f"no main branch (main or origin/main) in {root} to diff against: pass --against")


# Runs in the exported tree with its own code first on sys.path; one line on failure.
_RENDER_SCRIPT = """
import sys
from pathlib import Path
try:
    from infra.render import render_stack
    render_stack(sys.argv[1], Path(sys.argv[3]), Path(sys.argv[2]))
except Exception as exc:
    name = type(exc).__name__
    text = str(exc) if name == "ConfigError" else f"{name}: {exc}"
    print("mlops-render-error: " + " ".join(text.split()), file=sys.stderr)
    sys.exit(1)
"""
_RENDER_TIMEOUT_S = 600


def render_at(stack: str, git_rev: str, project_dir: Path) -> RenderResult:
    """The stack rendered as it was at a git revision, by that revision's own program and components.

    The revision is exported with `git archive` into a temporary folder (the repository, its
    index and worktrees stay untouched) and rendered there by this venv's Python with the
    exported code first on sys.path; the folder is removed afterwards.
    """
    root = project_dir.resolve()
    commit = resolve_revision(root, git_rev)
    return _render_revision(stack, commit, root, _revision_label(git_rev, commit))


def _revision_label(rev: str, commit: str) -> str:
    return rev if commit.startswith(rev) else f"{rev} ({commit[:12]})"


def _render_revision(stack: str, commit: str, root: Path, label: str) -> RenderResult:
    relative = root.relative_to(_repository(root).resolve())
    with tempfile.TemporaryDirectory(prefix="mlops-diff-") as tmp:
        tree = Path(tmp) / "tree"
        _export(root, commit, tree)
        project = tree / relative
        if not (project / PROJECT_FILE).is_file():
            raise DiffError(f"revision {label} has no {relative / PROJECT_FILE}")
        out = Path(tmp) / "render"
        _render_in(project, stack, out, f"at {label}", commit)
        return replace(load_render(out, stack), out_dir=None)


def _export(root: Path, commit: str, target: Path) -> None:
    target.mkdir(parents=True)
    command = ["git", "-C", str(root), "archive", "--format=tar", commit]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as git:
        assert git.stdout is not None
        try:
            with tarfile.open(fileobj=git.stdout, mode="r|") as archive:
                archive.extractall(target, filter="data")
        except tarfile.TarError as exc:
            raise DiffError(f"git archive {commit[:12]} in {root} gave no readable tree: {exc}") from None
    if git.returncode != 0:
        raise DiffError(f"git archive {commit[:12]} failed in {root} (exit code {git.returncode})")


def _render_in(project: Path, stack: str, out: Path, label: str, commit: str | None = None) -> None:
    """`render_stack` in a fresh interpreter of this venv, with `project`'s own code first on sys.path."""
    env = {**os.environ, **({"MLOPS_GIT_COMMIT": commit} if commit else {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RENDER_SCRIPT, stack, str(project), str(out)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=_RENDER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DiffError(f"rendering stack {stack!r} {label} took over {_RENDER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        found = [line for line in done.stderr.splitlines() if line.startswith("mlops-render-error: ")]
        detail = found[-1].removeprefix("mlops-render-error: ") if found else f"exit code {done.returncode}"
        raise DiffError(f"rendering stack {stack!r} {label} failed: {detail}")


def _render_here(stack: str, root: Path) -> RenderResult:
    """The working tree's render: in this process when it is the code this venv runs, else by its own."""
    if root != REPO_ROOT.resolve():
        with tempfile.TemporaryDirectory(prefix="mlops-diff-") as tmp:
            _render_in(root, stack, Path(tmp) / "render", f"in {root}")
            return replace(load_render(Path(tmp) / "render", stack), out_dir=None)
    try:
        return run_program(stack, root)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        raise DiffError(f"rendering stack {stack!r} in {root} failed: {' '.join(detail.split())}") from None


def diff_stack(stack: str, against: str | None, project_dir: Path) -> PlanDiff:
    """The working tree's render of a stack against a saved render folder or a git revision.

    `against=None` is the merge base of HEAD with the main branch. Every failure is a DiffError
    (or a ConfigError for the stack itself) with a one-line message.
    """
    root = project_dir.resolve()
    read_stack_config(stack, root)  # an unknown stack fails before anything renders
    if against is not None and Path(against).is_dir():
        before = load_render(Path(against), stack)
        return diff_renders(before, _render_here(stack, root), against=against)
    if against is None:
        ref, commit = merge_base(root)
        label = f"merge base with {ref} ({commit[:12]})"
    else:
        commit = resolve_revision(root, against)
        label = _revision_label(against, commit)
    after = _render_here(stack, root)
    return diff_renders(_render_revision(stack, commit, root, label), after, against=label)
