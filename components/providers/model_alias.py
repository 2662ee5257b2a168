"""ModelAlias: a registry alias (`champion`) that a stack owns, as a Pulumi resource over MLflow.

The stack points the alias at the version it serves only after the serving rollout succeeded
(the resource depends on it), so a failed rollout leaves the registry naming what is actually
served. `read` returns the version the alias names now, so `pulumi preview --refresh` shows an
alias that someone moved by hand as a diff, and `pulumi up --refresh` moves it back.

Runs where `pulumi up` runs: `tracking_uri` must be reachable from there. Every call is bounded
(a few retries, a timeout), and every failure names the tracking URI; a failed create stores
nothing in the stack's state. An MLflow with authentication on gets `tracking_username` and
`tracking_password`, which stay secret in the state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

__all__ = ["ModelAlias", "ModelAliasArgs", "ModelAliasProvider"]

MLOPS_KIND = "model-alias"
_REPLACE_ON = ("tracking_uri", "model_name", "alias")
_UPDATE_ON = ("version", "release_id", "tracking_username", "tracking_password")
SECRET_PROPS = ("tracking_password",)


@dataclass(frozen=True)
class ModelAliasArgs:
    tracking_uri: pulumi.Input[str]
    """MLflow URL reachable from where `pulumi up` runs. Changing it replaces the resource."""
    model_name: pulumi.Input[str]
    """Registered model name. Changing it replaces the resource."""
    alias: pulumi.Input[str]
    """The alias, e.g. champion. Changing it replaces the resource."""
    version: pulumi.Input[str]
    """The version the alias must name."""
    release_id: pulumi.Input[str] | None = None
    """When set, the version must carry this release id (tag mlops.release_id), or nothing moves."""
    tracking_username: pulumi.Input[str] | None = None
    """The MLflow user, for a server with authentication on; set with tracking_password."""
    tracking_password: pulumi.Input[str] | None = None
    """Secret: the user's password (a new one updates the state, nothing moves)."""

    def __post_init__(self) -> None:
        if (self.tracking_username is None) != (self.tracking_password is None):
            raise ValueError("tracking_username and tracking_password must be given together or not at all")


class ModelAliasProvider(pulumi.dynamic.ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        failures = []
        version = news.get("version")
        if isinstance(version, str) and not re.fullmatch(r"[1-9][0-9]*", version):
            failures.append(
                pulumi.dynamic.CheckFailure(
                    "version", f"must be a registered version number, got {version!r}"
                )
            )
        alias = news.get("alias")
        if isinstance(alias, str) and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,255}", alias):
            failures.append(pulumi.dynamic.CheckFailure("alias", f"is not a valid MLflow alias: {alias!r}"))
        return pulumi.dynamic.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        previous = _point(props)
        outs = {**props, "previous_version": previous or "", "mlops_kind": MLOPS_KIND}
        return pulumi.dynamic.CreateResult(id_=f"{props['model_name']}@{props['alias']}", outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        current = _current(props)
        if current is _MODEL_GONE:
            return pulumi.dynamic.ReadResult(id_="", outs={})
        # An alias moved (or removed) by hand reads back as the version it names now.
        live = {**props, "version": current or ""}
        return pulumi.dynamic.ReadResult(id_=id_, outs=live, inputs=_inputs(live))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        replaces = [k for k in _REPLACE_ON if olds.get(k) != news.get(k)]
        changed = replaces + [k for k in _UPDATE_ON if olds.get(k) != news.get(k)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        previous = _point(news)
        return pulumi.dynamic.UpdateResult(
            outs={**news, "previous_version": previous or "", "mlops_kind": MLOPS_KIND}
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Remove the alias only while it still names this stack's version (a hand move stays)."""
        current = _current(props)
        if current not in (_MODEL_GONE, None) and current == str(props["version"]):
            client = _client(props)
            _call(
                props,
                "deleting the alias",
                lambda: client.delete_registered_model_alias(props["model_name"], props["alias"]),
            )


_MODEL_GONE = object()


def _inputs(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props.get(k) for k in ("tracking_uri", "model_name", "alias", *_UPDATE_ON)}


def _client(props: dict[str, Any]) -> Any:
    from components.providers.mlflow_credentials import TrackingCredentials, tracking_client
    from model.registry import bound_http_retries

    bound_http_retries()

    username, password = props.get("tracking_username"), props.get("tracking_password")
    login = TrackingCredentials(str(username), str(password)) if username and password else None
    return tracking_client(str(props["tracking_uri"]), login)


def _call(props: dict[str, Any], what: str, call: Any) -> Any:
    """Run an MLflow call; any failure names the alias, the action and the tracking URI."""
    try:
        return call()
    except Exception as exc:
        detail = getattr(exc, "message", None) or str(exc)
        raise RuntimeError(
            f"{props['model_name']}@{props['alias']}: {what} at {props['tracking_uri']} failed: "
            f"{type(exc).__name__}: {detail}"
        ) from None


def _current(props: dict[str, Any]) -> Any:
    """The version the alias names now, None when unset, _MODEL_GONE without the model."""
    from mlflow.exceptions import MlflowException

    client = _client(props)

    def registered_model() -> Any:
        try:
            return client.get_registered_model(props["model_name"])
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    model = _call(props, "reading the alias", registered_model)
    if model is None:
        return _MODEL_GONE
    version = (model.aliases or {}).get(props["alias"])
    return str(version) if version is not None else None


def _point(props: dict[str, Any]) -> str | None:
    """Check the target version, then point the alias at it; returns what it named before."""
    client = _client(props)
    name, alias, version = str(props["model_name"]), str(props["alias"]), str(props["version"])
    target = _call(props, f"looking up version {version}", lambda: client.get_model_version(name, version))
    expected = props.get("release_id")
    found = (target.tags or {}).get("mlops.release_id")
    if expected and found != expected:
        raise RuntimeError(
            f"{name} version {version} at {props['tracking_uri']} is release {found or '(untagged)'}, "
            f"not {expected}: refusing to point {alias!r} at it"
        )
    before = _current(props)
    _call(
        props,
        f"pointing the alias at version {version}",
        lambda: client.set_registered_model_alias(name, alias, version),
    )
    return before if isinstance(before, str) else None


class ModelAlias(pulumi.dynamic.Resource):
    """A registry alias that names the version a stack serves."""

    version: pulumi.Output[str]
    """The version the alias names (after a refresh: the version it names now)."""
    previous_version: pulumi.Output[str]
    """What the alias named before this stack last moved it ('' if unset)."""

    def __init__(self, name: str, args: ModelAliasArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        password = args.tracking_password
        super().__init__(
            ModelAliasProvider(),
            name,
            {
                "tracking_uri": args.tracking_uri,
                "model_name": args.model_name,
                "alias": args.alias,
                "version": args.version,
                "release_id": args.release_id,
                "tracking_username": args.tracking_username,
                "tracking_password": None if password is None else pulumi.Output.secret(password),
                "previous_version": None,
                "mlops_kind": None,
            },
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_PROPS))
            ),
        )
