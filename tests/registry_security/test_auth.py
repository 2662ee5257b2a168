"""The basic-auth app as prod runs it: no request without a user, the admin's password is the
configured secret (MLflow's old default does not work), and the toolkit's clients log in."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from components.providers.mlflow_credentials import TrackingCredentials, tracking_client
from components.providers.model_alias import ModelAliasArgs, ModelAliasProvider
from infra.config import load_stack_file
from infra.promotion import stack_tracking_credentials
from model.errors import RegistryError
from tests.registry_security.conftest import ADMIN_PASSWORD, ALLOWED_ORIGIN, request
from tests.services import MlflowService

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CREATE = "/api/2.0/mlflow/experiments/create"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _create(service: MlflowService, login: tuple[str, str] | None, **headers: str) -> int:
    body = json.dumps({"name": f"auth-{uuid.uuid4().hex[:8]}"}).encode()
    return request(service, "POST", CREATE, headers, body, login=login).status


def test_a_write_needs_the_configured_admin(authenticated_server: MlflowService) -> None:
    assert _create(authenticated_server, None) == 401
    assert request(authenticated_server, "GET", SEARCH).status == 401
    for wrong in (("admin", "password1234"), ("admin", ADMIN_PASSWORD + "x"), ("root", ADMIN_PASSWORD)):
        assert _create(authenticated_server, wrong) == 401, wrong
    assert _create(authenticated_server, ("admin", ADMIN_PASSWORD)) == 200
    assert request(authenticated_server, "GET", "/health").status == 200  # probes need no user


def test_a_login_does_not_lift_the_host_and_origin_checks(authenticated_server: MlflowService) -> None:
    login = ("admin", ADMIN_PASSWORD)
    assert _create(authenticated_server, login, Origin="https://evil.example.com") == 403
    assert _create(authenticated_server, login, Origin=ALLOWED_ORIGIN) == 403  # not allowed here
    assert _create(authenticated_server, login, Host="evil.example.com") == 403


def test_clients_log_in_per_server_and_leave_the_environment_alone(
    authenticated_server: MlflowService,
) -> None:
    uri = authenticated_server.tracking_uri
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    logged_in = tracking_client(uri, TrackingCredentials("admin", ADMIN_PASSWORD))
    anonymous = tracking_client(uri)
    name = f"auth-model-{uuid.uuid4().hex[:8]}"
    logged_in.create_registered_model(name)
    with pytest.raises(MlflowException, match="401"):
        anonymous.get_registered_model(name)  # interleaved: each client keeps its own login
    assert logged_in.get_registered_model(name).name == name
    assert {k: os.environ.get(k) for k in before} == before


def test_the_alias_provider_logs_in_with_its_secret_inputs(authenticated_server: MlflowService) -> None:
    uri = authenticated_server.tracking_uri
    client = tracking_client(uri, TrackingCredentials("admin", ADMIN_PASSWORD))
    name = f"alias-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    client.create_model_version(name, f"s3://nowhere/{name}/model")
    props = {"tracking_uri": uri, "model_name": name, "alias": "champion", "version": "1", "release_id": None}
    with pytest.raises(RuntimeError, match=f"at {uri} failed.*401"):
        ModelAliasProvider().create(props)
    login = {"tracking_username": "admin", "tracking_password": ADMIN_PASSWORD}
    created = ModelAliasProvider().create({**props, **login})
    assert created.outs is not None
    assert created.outs["tracking_password"] == ADMIN_PASSWORD  # kept for delete; secret in state
    assert client.get_registered_model(name).aliases == {"champion": "1"}
    ModelAliasProvider().delete(created.id, created.outs)
    assert client.get_registered_model(name).aliases == {}
    with pytest.raises(ValueError, match="given together"):
        ModelAliasArgs(
            tracking_uri=uri, model_name=name, alias="champion", version="1", tracking_username="admin"
        )


def test_promotion_logs_in_to_prod_with_its_password_variable(
    authenticated_server: MlflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = load_stack_file("prod", REPO)
    monkeypatch.delenv("MLOPS_TRACKING_PASSWORD_PROD", raising=False)
    with pytest.raises(RegistryError, match="set MLOPS_TRACKING_PASSWORD_PROD to the password of 'admin'"):
        stack_tracking_credentials("prod", prod)
    monkeypatch.setenv("MLOPS_TRACKING_PASSWORD_PROD", ADMIN_PASSWORD)
    login = stack_tracking_credentials("prod", prod)
    assert login == TrackingCredentials("admin", ADMIN_PASSWORD) and ADMIN_PASSWORD not in repr(login)
    tracking_client(authenticated_server.tracking_uri, login).search_experiments(max_results=1)
    assert stack_tracking_credentials("dev", load_stack_file("dev", REPO)) is None  # dev: no login
