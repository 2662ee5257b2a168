"""Path traversal against every endpoint that reads artifacts: `..`, encoded (`%2e%2e`,
`%252e%252e`, `%2f`, `%5c`), absolute paths, file: URIs, symlinks inside an artifact folder, and
model versions or experiments that point outside. None may return the canary file placed outside
the artifact root; the same endpoint does return a real artifact (so the probes reach it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.providers.mlflow_credentials import TrackingCredentials, tracking_client
from tests.registry_security.conftest import Canary, Response, request
from tests.services import MlflowService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD = b"a real artifact"


@dataclass(frozen=True)
class Target:
    """A run (and its model version) whose artifact folder holds ok.txt and two symlinks out."""

    service: MlflowService
    run_id: str
    folder: Path
    """The run's artifact folder on this file system."""
    model: str
    version: str

    def get(self, target: str) -> Response:
        login = self.service.credentials
        return request(self.service, "GET", target, login=(login.username, login.password) if login else None)


def _client(service: MlflowService) -> MlflowClient:
    return tracking_client(service.tracking_uri, service.credentials)


def _run_folder(service: MlflowService, artifact_uri: str) -> Path:
    if artifact_uri.startswith("mlflow-artifacts:/"):  # proxied: under the destination
        return Path(service.artifact_root, artifact_uri.removeprefix("mlflow-artifacts:/"))
    return Path(artifact_uri.removeprefix("file://"))


def _target(service: MlflowService, canary: Canary, tmp_path: Path) -> Target:
    client = _client(service)
    experiment = client.create_experiment(f"traversal-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    good = tmp_path / "ok.txt"
    good.write_bytes(GOOD)
    client.log_artifact(run.info.run_id, str(good))
    folder = _run_folder(service, run.info.artifact_uri)
    assert (folder / "ok.txt").read_bytes() == GOOD
    # What someone with a foothold in the store could plant: links out of the artifact root.
    (folder / "link.txt").symlink_to(canary.path)
    (folder / "linkdir").symlink_to(canary.path.parent, target_is_directory=True)
    model = f"traversal-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(model)
    version = client.create_model_version(model, run.info.artifact_uri, run_id=run.info.run_id).version
    return Target(service, run.info.run_id, folder, model, str(version))


def _path_probes(folder: Path, canary: Canary) -> list[str]:
    """Values of a `path=` query parameter, URL-encoded as sent."""
    up = os.path.relpath(canary.path, folder)  # ../../../outside/canary.txt
    return [
        quote(up),
        up.replace(".", "%2e"),
        up.replace(".", "%252e"),
        quote(up, safe=""),  # %2F separators
        up.replace("/", "%5c"),  # backslashes
        "ok.txt/" + quote(up),
        quote(str(canary.path)),
        quote("file://" + str(canary.path)),
        quote("//" + str(canary.path)),
        quote(f"{up}\x00ok.txt", safe="/"),
        "link.txt",
        f"linkdir/{canary.path.name}",
    ]


def _assert_never_read(answers: dict[str, Response], canary: Canary) -> None:
    leaked = {probe: a.status for probe, a in answers.items() if canary.secret in a.body}
    assert not leaked, f"the canary was returned for {leaked}"
    served = {probe: a.body[:80] for probe, a in answers.items() if a.status < 400}
    assert not served, f"probes answered with success: {served}"


def _assert_never_listed(answers: dict[str, Response], canary: Canary) -> None:
    """Listings (which name files, and never echo the probe) must not show the canary's folder."""
    listed = {probe for probe, a in answers.items() if canary.path.name.encode() in a.body}
    assert not listed, f"a listing outside the artifact root named the canary for {listed}"


@pytest.fixture(params=["registry_server", "proxy_server", "authenticated_server"])
def target(request: pytest.FixtureRequest, canary: Canary, tmp_path: Path) -> Iterator[Target]:
    yield _target(request.getfixturevalue(request.param), canary, tmp_path)


def test_get_artifact_never_reads_outside_the_run(target: Target, canary: Canary) -> None:
    base = f"/get-artifact?run_id={target.run_id}&path="
    assert (ok := target.get(base + "ok.txt")).status == 200 and ok.body == GOOD
    answers = {probe: target.get(base + probe) for probe in _path_probes(target.folder, canary)}
    _assert_never_read(answers, canary)


def test_model_version_artifacts_never_read_outside_the_version(target: Target, canary: Canary) -> None:
    base = f"/model-versions/get-artifact?name={target.model}&version={target.version}&path="
    assert (ok := target.get(base + "ok.txt")).status == 200 and ok.body == GOOD
    answers = {probe: target.get(base + probe) for probe in _path_probes(target.folder, canary)}
    _assert_never_read(answers, canary)


def test_a_version_or_experiment_pointing_outside_reads_nothing(target: Target, canary: Canary) -> None:
    client = _client(target.service)
    outside = canary.path.parent
    answers: dict[str, Response] = {}
    for source in (str(outside), f"file://{outside}"):
        try:
            version = client.create_model_version(target.model, source).version
        except MlflowException:
            continue  # refused outright: nothing to read
        base = f"/model-versions/get-artifact?name={target.model}&version={version}&path="
        answers[f"version {source}"] = target.get(base + quote(canary.path.name))
    try:
        experiment = client.create_experiment(
            f"outside-{uuid.uuid4().hex[:8]}", artifact_location=str(outside)
        )
    except MlflowException:
        pass
    else:
        run = client.create_run(experiment).info
        for probe in _path_probes(_run_folder(target.service, run.artifact_uri), canary):
            answers[f"experiment {probe}"] = target.get(f"/get-artifact?run_id={run.run_id}&path={probe}")
    _assert_never_read(answers, canary)


def test_the_artifact_proxy_never_reads_outside_its_destination(
    proxy_server: MlflowService, canary: Canary, tmp_path: Path
) -> None:
    target = _target(proxy_server, canary, tmp_path)
    root = Path(proxy_server.artifact_root)
    (root / "link.txt").symlink_to(canary.path)
    (root / "linkdir").symlink_to(canary.path.parent, target_is_directory=True)
    relative = target.folder.relative_to(root).as_posix()
    up = os.path.relpath(canary.path, root)
    answers: dict[str, Response] = {}
    for prefix in ("/api/2.0/mlflow-artifacts/artifacts", "/ajax-api/2.0/mlflow-artifacts/artifacts"):
        ok = target.get(f"{prefix}/{relative}/ok.txt")
        assert ok.status == 200 and ok.body == GOOD, ok
        for probe in [
            up,
            up.replace(".", "%2e"),
            up.replace(".", "%252e"),
            quote(up, safe=""),
            up.replace("/", "%5c"),
            f"{relative}/ok.txt/../../../../../{up}",
            quote(str(canary.path), safe=""),
            "/" + str(canary.path),
            "link.txt",
            f"linkdir/{canary.path.name}",
            f"{relative}/link.txt",
            f"{relative}/linkdir/{canary.path.name}",
        ]:
            answers[f"{prefix}/{probe}"] = target.get(f"{prefix}/{probe}")
        listings = {
            listing: target.get(f"{prefix}?path={listing}")
            for listing in (quote(up.rsplit("/", 1)[0]), "linkdir", quote(str(canary.path.parent), safe=""))
        }
        assert target.get(f"{prefix}?path={relative}").body.count(b"ok.txt") == 1  # listings work
        _assert_never_listed(listings, canary)
    _assert_never_read(answers, canary)


def test_without_a_login_the_authenticated_server_reads_nothing(
    authenticated_server: MlflowService, canary: Canary, tmp_path: Path
) -> None:
    target = _target(authenticated_server, canary, tmp_path)
    for endpoint in (
        f"/get-artifact?run_id={target.run_id}&path=ok.txt",
        f"/model-versions/get-artifact?name={target.model}&version={target.version}&path=ok.txt",
    ):
        answer = request(authenticated_server, "GET", endpoint)
        assert answer.status == 401 and GOOD not in answer.body, (endpoint, answer)
    wrong = TrackingCredentials("admin", "password1234")
    answer = request(
        authenticated_server,
        "GET",
        f"/get-artifact?run_id={target.run_id}&path=ok.txt",
        login=(wrong.username, wrong.password),
    )
    assert answer.status == 401
