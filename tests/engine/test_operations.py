"""Operating stacks through the real engine (render mode, file:// backend): `preview
--expect-no-changes` after `up`, the backend's lock against a second `up`, and the recovery of an
`up` killed mid-way. See docs/deploy.md, "Pulumi operations".

An `up` is held mid-way deterministically: a named pipe sits where the provider will write the new
release's Job manifest, so the provider's write blocks (the engine has recorded the Job's create
as a pending operation) until the test reads the pipe or kills the update. Runs after the other
engine tests (file order) and leaves dev on a newer release, converged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine.conftest import Engine, changed_steps

pytestmark = pytest.mark.slow

STACKS = ("dev", "prod")
JOB = "kubernetes:batch/v1:Job::training-job"
LOCKED = (
    "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
    "or delete the lock file with `pulumi cancel`."
)
PENDING = "Attempting to deploy or update resources with 1 pending operations from previous deployment."
RENDER_MODE_REFRESH = {"PULUMI_K8S_SKIP_UPDATE_UNREACHABLE": "true"}
"""The provider has no cluster in render mode and its Read refuses unless told to keep the state."""


def _type_name(urn: str) -> str:
    """type::name of a URN (without its parent's type), as changed_steps keys steps."""
    qualified_type, name = urn.split("::")[-2:]
    return f"{qualified_type.split('$')[-1]}::{name}"


def _locks(engine: Engine, stack: str) -> list[Path]:
    """The DIY backend's lock files for `stack` (.pulumi/locks/<org>/<project>/<stack>/<id>.json)."""
    return sorted(engine.state.glob(f".pulumi/locks/*/*/{stack}/*.json"))


def _pending(engine: Engine, stack: str) -> list[tuple[str, str]]:
    """(URN type::name, operation) of the pending operations `pulumi stack export` shows."""
    run = engine.pulumi("stack", "export", stack=stack).check()
    ops = json.loads(run.stdout)["deployment"].get("pending_operations") or []
    return [(_type_name(op["resource"]["urn"]), op["type"]) for op in ops]


def _new_release(engine: Engine, stack: str) -> str:
    """Change the training spec (a new release) and return the new Job's name from the plan;
    `preview --expect-no-changes` fails on it, as in CI."""
    config = engine.stack_config(stack)
    config["mlops:training"]["params"]["n_estimators"] += 1
    engine.write_stack_config(stack, config)
    run = engine.pulumi("preview", "--json", "--expect-no-changes", stack=stack)
    assert run.returncode != 0, run.output[-3000:]
    assert "no changes were expected for preview but changes were proposed" in run.stderr
    preview = json.loads(run.stdout)
    assert changed_steps(preview).get(JOB, set()) & {"replace", "create-replacement"}, changed_steps(preview)
    (job,) = [s for s in preview["steps"] if _type_name(s["urn"]) == JOB and "newState" in s]
    return str(job["newState"]["inputs"]["metadata"]["name"])


def _hold_manifest(engine: Engine, stack: str, job_name: str) -> Path:
    """A named pipe at the path the provider renders the Job `job_name` to (its
    renderPathForResource: 1-manifest/<apiVersion>-<kind>-<namespace>-<name>.yaml)."""
    (job,) = [o for o in engine.manifests(stack) if o["kind"] == "Job"]
    namespace = job["metadata"]["namespace"]
    path = engine.render_dirs[stack] / "1-manifest" / f"batch_v1-job-{namespace}-{job_name}.yaml"
    os.mkfifo(path)
    return path


def _spawn_up(engine: Engine, stack: str, log: Path) -> subprocess.Popen[bytes]:
    """`pulumi up` in a new process group (the engine starts each plugin in one of its own)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack],
            cwd=engine.project,
            env=engine.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_pending_create(engine: Engine, stack: str, up: subprocess.Popen[bytes], log: Path) -> None:
    """Until the checkpoint records the Job's create as pending (read from the backend's file, as
    `pulumi stack export` would wait for the lock)."""
    (checkpoint,) = engine.state.glob(f".pulumi/stacks/*/{stack}.json")
    deadline = time.monotonic() + 180
    while True:
        assert up.poll() is None, f"`pulumi up` exited {up.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        try:
            latest: dict[str, Any] = json.loads(checkpoint.read_text())["checkpoint"]["latest"]
        except (json.JSONDecodeError, KeyError):
            latest = {}  # mid-write
        ops = latest.get("pending_operations") or []
        if any(_type_name(op["resource"]["urn"]) == JOB and op["type"] == "creating" for op in ops):
            return
        time.sleep(0.1)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the CLI's process group and every plugin it started (the engine puts each plugin
    in a process group of its own, so killing the CLI alone leaves them running), as a CI runner
    ending the job would; then wait until none is left."""
    pids = [proc.pid, *_descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 30
    while alive := [pid for pid in pids if _running(pid)]:
        assert time.monotonic() < deadline, f"still running after SIGKILL: {alive}"
        time.sleep(0.1)


def _read_pipe(path: Path, timeout: float = 60) -> bytes:
    """What the provider writes into the pipe (this lets its write, and the update, finish)."""
    data: list[bytes] = []
    reader = threading.Thread(target=lambda: data.append(path.read_bytes()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert data, f"nothing was written to {path} within {timeout}s"
    return data[0]


@pytest.fixture(scope="module")
def up_to_date(engine: Engine) -> Engine:
    """Both stacks brought up once (a no-op for whatever earlier tests left converged)."""
    for stack in STACKS:
        engine.pulumi("up", "--yes", "--skip-preview", stack=stack).check()
    return engine


# 1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_preview_expects_no_changes_after_up(up_to_date: Engine, stack: str) -> None:
    up_to_date.pulumi("preview", "--expect-no-changes", stack=stack).check()
    assert _locks(up_to_date, stack) == []


# 2 -------------------------------------------------------------------------------------------


def test_a_second_up_is_refused_while_the_first_holds_the_lock(up_to_date: Engine, tmp_path: Path) -> None:
    engine = up_to_date
    pipe = _hold_manifest(engine, "dev", _new_release(engine, "dev"))
    log = tmp_path / "first-up.log"
    first = _spawn_up(engine, "dev", log)
    try:
        _wait_pending_create(engine, "dev", first, log)
        assert len(_locks(engine, "dev")) == 1
        second = engine.pulumi("up", "--yes", "--skip-preview", stack="dev")
        assert first.poll() is None  # the first held the lock all along
        assert second.returncode != 0
        assert LOCKED in second.stderr, second.output[-3000:]
        assert f"(pid {first.pid})" in second.stderr  # the lock names its holder
        manifest = _read_pipe(pipe)
        assert first.wait(180) == 0, log.read_text()[-4000:]
    finally:
        if first.poll() is None:
            _kill_tree(first)
    pipe.unlink()
    pipe.write_bytes(manifest)  # what the provider rendered, as a regular file again
    assert yaml.safe_load(manifest)["kind"] == "Job"
    assert _locks(engine, "dev") == [] and _pending(engine, "dev") == []
    engine.pulumi("preview", "--expect-no-changes", stack="dev").check()


# 3 -------------------------------------------------------------------------------------------


def test_a_killed_up_is_recovered_with_cancel_refresh_and_up(up_to_date: Engine, tmp_path: Path) -> None:
    engine = up_to_date
    job_name = _new_release(engine, "dev")
    pipe = _hold_manifest(engine, "dev", job_name)
    log = tmp_path / "killed-up.log"
    killed = _spawn_up(engine, "dev", log)
    try:
        _wait_pending_create(engine, "dev", killed, log)
    finally:
        _kill_tree(killed)
    pipe.unlink()  # killed before the write: the new Job was never rendered

    # The dead update's lock stays: the next `up` is refused until `pulumi cancel` removes it.
    refused = engine.pulumi("up", "--yes", "--skip-preview", stack="dev")
    assert refused.returncode != 0
    assert LOCKED in refused.stderr and f"(pid {killed.pid})" in refused.stderr, refused.output[-3000:]
    cancel = engine.pulumi("cancel", "--yes", stack="dev").check()
    assert "The currently running update for 'dev' has been canceled!" in cancel.output
    assert _locks(engine, "dev") == []
    assert _pending(engine, "dev") == [(JOB, "creating")]

    # `up` names the interrupted operation and applies the change, but keeps the pending create.
    up = engine.pulumi("up", "--yes", "--skip-preview", stack="dev").check()
    assert PENDING in up.stdout, up.output[-4000:]
    assert f"{JOB}, interrupted while creating" in up.stdout
    assert pipe.is_file() and yaml.safe_load(pipe.read_text())["metadata"]["name"] == job_name
    assert _pending(engine, "dev") == [(JOB, "creating")]

    # A plain refresh fails in render mode; told to keep the recorded state, it clears the
    # pending create (the Job was rendered by the `up` above).
    plain = engine.pulumi("refresh", "--yes", stack="dev")
    assert plain.returncode != 0
    assert "failed to read resource state due to unreachable cluster" in plain.output
    engine.pulumi("refresh", "--yes", "--clear-pending-creates", stack="dev", env=RENDER_MODE_REFRESH).check()
    assert _pending(engine, "dev") == []
    engine.pulumi("preview", "--expect-no-changes", stack="dev").check()
    jobs = [o["metadata"]["name"] for o in engine.manifests("dev") if o["kind"] == "Job"]
    assert jobs == [job_name]
