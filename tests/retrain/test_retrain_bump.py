"""`mlops retrain-bump`: the newest dataset version under the prefix, written as one changed line.

The project is a copy of this repository's Pulumi.yaml and Pulumi.dev.yaml with retraining
enabled; dataset versions are files the tests write (scikit-learn's bundled breast cancer data),
in a folder or in a real SeaweedFS bucket (tests/services.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError
from infra.retrain import RetrainError, bump_from_event, newest_version
from tests.retrain.helpers import NEWEST, enable_retrain, frame, write_event, write_versions
from tests.services import S3Service

REPO = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, prefix: str, endpoint_url: str | None = None, enabled: bool = True) -> Path:
    """A project folder: this repo's Pulumi.yaml, and its dev stack with retraining on `prefix`."""
    root = tmp_path / "project"
    root.mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    shutil.copy(REPO / "Pulumi.dev.yaml", root / "Pulumi.dev.yaml")
    enable_retrain(root / "Pulumi.dev.yaml", prefix, endpoint_url, enabled)
    return root


def event(tmp_path: Path, action: str = "mlops-retrain", **payload: Any) -> Path:
    return write_event(tmp_path / "event.json", action, **payload)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def run_cli(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["retrain-bump", "--workdir", str(root), *args], env=env)


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    return write_versions(tmp_path / "datasets" / "breast-cancer")


def test_picks_the_newest_version_and_changes_only_that_line(tmp_path: Path, versions: Path) -> None:
    prefix = f"{versions}/"
    root = project(tmp_path, prefix)
    stack_file = root / "Pulumi.dev.yaml"
    before = stack_file.read_text()
    result = run_cli(root, "--event", str(event(tmp_path)), "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    newest = f"{prefix}{NEWEST}"
    assert outcome["changed"] is True and outcome["written"] is True
    assert outcome["previous"] == "sklearn:breast_cancer" and outcome["dataset"] == newest
    assert outcome["branch"] == "retrain/dev/breast-cancer"
    assert outcome["title"] == "Retrain breast-cancer on data.parquet (dev, drift in release 0123456789ab)"
    body = outcome["body"]
    for fact in ("`breast-cancer`", "`0123456789ab`", "`mean radius`, `worst area`", "`4f1c2a9e0b7d3c55`"):
        assert fact in body
    assert "569 rows" in body and "PSI 0.31 on mean radius" in body
    # Comments, order and every other byte stay: one line differs.
    after = stack_file.read_text()
    assert changed_lines(before, after) == [
        ("    dataset: sklearn:breast_cancer", f"    dataset: {newest}"),
    ]
    assert "# Dev stack: trains in-cluster" in after


def test_nothing_newer_is_a_no_op(tmp_path: Path, versions: Path) -> None:
    root = project(tmp_path, f"{versions}/")
    path = event(tmp_path)
    assert run_cli(root, "--event", str(path)).exit_code == 0
    written = (root / "Pulumi.dev.yaml").read_bytes()
    again = run_cli(root, "--event", str(path), "--json")
    assert again.exit_code == 0, again.output
    outcome = json.loads(again.stdout)
    assert outcome["changed"] is False and outcome["body"] == ""
    assert "nothing newer" in outcome["message"]
    assert (root / "Pulumi.dev.yaml").read_bytes() == written

    # An empty prefix has nothing newer either.
    empty = tmp_path / "empty"
    empty.mkdir()
    other = project(tmp_path / "e", f"{empty}/")
    before = (other / "Pulumi.dev.yaml").read_bytes()
    result = run_cli(other, "--event", str(path), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["changed"] is False
    assert (other / "Pulumi.dev.yaml").read_bytes() == before


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: frame(50).drop(columns="target").to_csv(p, index=False), "target column 'target'"),
        (lambda p: p.write_bytes(b"PAR1 not really parquet"), "could not be parsed as .parquet"),
    ],
    ids=["no-target-column", "corrupt"],
)
def test_an_unusable_newest_version_is_refused_and_nothing_is_written(
    tmp_path: Path, versions: Path, write: Any, message: str
) -> None:
    suffix = ".csv" if "target" in message else ".parquet"
    write(versions / f"2025-07-01{suffix}")
    root = project(tmp_path, f"{versions}/")
    before = (root / "Pulumi.dev.yaml").read_bytes()
    result = run_cli(root, "--event", str(event(tmp_path)))
    assert result.exit_code == 2, result.output
    assert f"2025-07-01{suffix}" in result.output and message in result.output
    assert "nothing written" in result.output
    assert (root / "Pulumi.dev.yaml").read_bytes() == before


def test_versions_compare_digits_as_numbers() -> None:
    prefix = "s3://b/d/"
    versions = [f"{prefix}v9/data.csv", f"{prefix}v10/data.csv"]
    assert newest_version(versions, prefix, "sklearn:breast_cancer") == f"{prefix}v10/data.csv"
    assert newest_version(versions, prefix, f"{prefix}v10/data.csv") is None
    assert newest_version(versions, prefix, f"{prefix}v11/data.csv") is None  # current is newer
    assert newest_version([], prefix, "sklearn:breast_cancer") is None


def test_bad_events_and_settings_are_refused_before_any_write(tmp_path: Path, versions: Path) -> None:
    root = project(tmp_path, f"{versions}/")
    before = (root / "Pulumi.dev.yaml").read_bytes()
    cases = [
        (event(tmp_path / "a", action="opened"), [], "is not a repository_dispatch mlops-retrain event"),
        (event(tmp_path / "b", release_id="nope"), [], "client_payload: release_id"),
        (event(tmp_path / "c", model_name="other-model"), [], "trains 'breast-cancer'"),
        (event(tmp_path / "d"), ["--stack", "prod"], "the alert names stack 'dev', not 'prod'"),
        (event(tmp_path / "e", stack="qa"), [], "Pulumi.qa.yaml does not exist"),
    ]
    for path, args, message in cases:
        result = run_cli(root, "--event", str(path), *args)
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output, result.output
    missing = run_cli(root, env={"GITHUB_EVENT_PATH": ""})
    assert missing.exit_code == 2 and "--event" in missing.output
    assert (root / "Pulumi.dev.yaml").read_bytes() == before

    # A stack that did not opt in is never rewritten, whoever sends the event.
    off = project(tmp_path / "off", f"{versions}/", enabled=False)
    with pytest.raises(RetrainError, match="does not retrain on drift"):
        bump_from_event(event(tmp_path / "f"), off)


def test_the_event_file_comes_from_github_event_path(tmp_path: Path, versions: Path) -> None:
    root = project(tmp_path, f"{versions}/")
    result = run_cli(root, "--dry-run", "--json", env={"GITHUB_EVENT_PATH": str(event(tmp_path))})
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["changed"] is True and outcome["written"] is False
    assert "would train on" in outcome["message"]


def test_a_write_that_would_reformat_other_lines_is_refused(tmp_path: Path) -> None:
    """Both stack-file writers, the dataset's and promotion's pin: a line they did not set must not move."""
    from infra.stack_file import read_pin, write_dataset, write_pin

    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    # Valid config that ruamel would write back differently: "{  }" as "{}", "{k:   v}" as "{k: v}".
    edits = {
        "dev": ("  mlops:registry: {}\n", "  mlops:registry: {  }\n"),
        "prod": (
            "  mlops:kubernetes:\n    context: prod-cluster\n",
            "  mlops:kubernetes: {context:   prod-cluster}\n",
        ),
    }
    for stack, (old, new) in edits.items():
        text = (REPO / f"Pulumi.{stack}.yaml").read_text()
        assert old in text
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(text.replace(old, new))
    dev, prod = tmp_path / "Pulumi.dev.yaml", tmp_path / "Pulumi.prod.yaml"
    pin = read_pin(prod)
    assert pin is not None
    writes = {
        dev: lambda: write_dataset(dev, "s3://data/cancer/v2.csv"),
        prod: lambda: write_pin(prod, pin.model_copy(update={"release_id": "abcdef012345"})),
    }
    for path, write in writes.items():
        before = path.read_bytes()
        with pytest.raises(ConfigError, match="would reformat other lines; set it by hand"):
            write()
        assert path.read_bytes() == before


@pytest.mark.integration
def test_newest_version_from_a_real_s3_bucket(
    tmp_path: Path, s3: S3Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.make_bucket("datasets")
    client = s3.client()
    for key, rows in (("v9/data.csv", 300), ("v10/data.csv", 569), ("v2/data.csv", 100)):
        client.put_object(Bucket=bucket, Key=f"cancer/{key}", Body=frame(rows).to_csv(index=False).encode())
    client.put_object(Bucket=bucket, Key="cancer/_SUCCESS", Body=b"")
    client.put_object(Bucket=bucket, Key="other/v99/data.csv", Body=b"a,b\n1,2\n")  # outside the prefix
    prefix = f"s3://{bucket}/cancer/"
    root = project(tmp_path, prefix, endpoint_url=s3.endpoint_url)
    # The stack's own credentials (as the workflow passes them), not the ambient AWS ones.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = {
        "MLOPS_S3_ACCESS_KEY_ID_DEV": s3.access_key,
        "MLOPS_S3_SECRET_ACCESS_KEY_DEV": s3.secret_key,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    before = (root / "Pulumi.dev.yaml").read_text()
    result = run_cli(root, "--event", str(event(tmp_path)), "--json", env=env)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["dataset"] == f"{prefix}v10/data.csv"
    assert "569 rows" in outcome["body"]
    after = (root / "Pulumi.dev.yaml").read_text()
    assert changed_lines(before, after) == [
        ("    dataset: sklearn:breast_cancer", f"    dataset: {prefix}v10/data.csv")
    ]

    # The newest version becomes unreadable (here: garbage), a newer one arrives: refused.
    client.put_object(Bucket=bucket, Key="cancer/v11/data.csv", Body=b"\x00\x01 not a table")
    refused = run_cli(root, "--event", str(event(tmp_path)), env=env)
    assert refused.exit_code == 2 and "v11/data.csv" in refused.output
    assert (root / "Pulumi.dev.yaml").read_text() == after

    # A prefix in a bucket that does not exist is a clear configuration error.
    gone = project(tmp_path / "gone", "s3://no-such-bucket-here/cancer/", endpoint_url=s3.endpoint_url)
    missing = run_cli(gone, "--event", str(event(tmp_path)), env=env)
    assert missing.exit_code == 2 and "cannot list the dataset prefix" in missing.output


def test_a_pin_write_keeps_sequences_as_pulumi_writes_them(tmp_path: Path) -> None:
    """`pulumi config set` indents a list under its key; a pin written after it moves no other line."""
    from infra.stack_file import read_pin, write_pin

    text = (REPO / "Pulumi.prod.yaml").read_text()
    flow = "    tracking_client_namespaces: [ingress-nginx]\n"
    assert flow in text
    block = "    tracking_client_namespaces:\n      - ingress-nginx\n      - gateway\n"
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    prod = tmp_path / "Pulumi.prod.yaml"
    prod.write_text(text.replace(flow, block))
    pin = read_pin(prod)
    assert pin is not None
    assert write_pin(prod, pin.model_copy(update={"release_id": "abcdef012345"}))
    after = prod.read_text()
    assert block in after and after.replace("abcdef012345", pin.release_id) == text.replace(flow, block)
