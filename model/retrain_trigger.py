"""`python -m model.retrain_trigger`: turn a firing drift alert into a reviewable retrain change.

Alertmanager posts its webhook (payload version 4) to `POST /alertmanager` with a bearer
token. For every firing alert whose name is a retrain alert (default `MLOpsModelDrift`) the
trigger asks GitHub for a `repository_dispatch` event `mlops-retrain`; the workflow
`.github/workflows/retrain.yml` then bumps the stack's dataset and opens a pull request whose
preview shows the new training Job. Nothing is deployed from here: the trigger only opens a
change that a person reviews.

Alertmanager re-sends a group while its alerts keep firing, and retries any non-2xx answer. So:
an alert episode (its `fingerprint` and `startsAt`) dispatches at most once (remembered in a
bounded memory); a model dispatches at most once per `min_interval` (a limited alert is answered
200: retrying cannot help); and a failed dispatch is answered 502 and not remembered, so
Alertmanager's retry dispatches it once GitHub answers again. Firing alerts of one model in one
notification become one dispatch that names all their drifting features.

Settings come from flags, then MLOPS_RETRAIN_* variables; the two tokens only from the
environment (a Kubernetes Secret), never from flags, and they are never logged. docs/retraining.md
describes the whole loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from model.validation import describe_errors

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "EVENT_TYPE",
    "GITHUB_TOKEN_ENV",
    "WEBHOOK_PATH",
    "WEBHOOK_TOKEN_ENV",
    "AlertmanagerAlert",
    "AlertmanagerWebhook",
    "Decision",
    "DispatchError",
    "GitHubDispatcher",
    "Outcome",
    "RetrainPayload",
    "RetrainTrigger",
    "TriggerSettings",
    "create_app",
    "describe_validation",
    "main",
]

log = logging.getLogger("mlops.retrain")

EVENT_TYPE = "mlops-retrain"
"""The `repository_dispatch` event type; retrain.yml listens for exactly this one."""
WEBHOOK_PATH = "/alertmanager"
GITHUB_TOKEN_ENV = "MLOPS_RETRAIN_GITHUB_TOKEN"
WEBHOOK_TOKEN_ENV = "MLOPS_RETRAIN_WEBHOOK_TOKEN"
DEFAULT_ALERT = "MLOpsModelDrift"
GITHUB_API = "https://api.github.com"

MODEL_NAME = r"^[a-z][a-z0-9-]{0,62}$"
RELEASE_ID = r"^[0-9a-f]{12}$"
NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
STACK = r"^[a-z][a-z0-9-]{0,30}$"
FINGERPRINT = r"^[0-9a-f]{1,64}$"
REPOSITORY = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
ALERT_NAME = r"^[A-Za-z_][A-Za-z0-9_:]{0,199}$"
# A dataset column as it may travel into a pull request: printable, no backticks, bounded.
FEATURE = r"^[^\x00-\x1f\x7f`]{1,128}$"
MAX_FEATURES = 50
MAX_SUMMARY = 500
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


# ---- the contract with the workflow --------------------------------------------------------


class RetrainPayload(BaseModel):
    """The dispatch's `client_payload`: what retrain.yml (`mlops retrain-bump`) receives.

    Both sides validate it with this model, so every value that reaches a branch name, a pull
    request or a log is one of these shapes. Unknown keys are ignored: a trigger and a workflow
    from different commits still understand each other.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_name: str = Field(pattern=MODEL_NAME)
    release_id: str = Field(pattern=RELEASE_ID)
    """The release the drifting server runs."""
    namespace: str = Field(pattern=NAMESPACE)
    stack: str = Field(pattern=STACK)
    """The stack whose dataset the workflow bumps (the trigger's --stack)."""
    fingerprint: str = Field(pattern=FINGERPRINT)
    """Alertmanager's fingerprint of the (earliest) alert."""
    starts_at: datetime
    """When that alert started firing."""
    features: tuple[Annotated[str, Field(pattern=FEATURE)], ...] = Field(default=(), max_length=MAX_FEATURES)
    """The drifting features (the alerts' `feature` labels), sorted; empty when none was named."""
    summary: str = Field(default="", max_length=MAX_SUMMARY)
    """The alert's summary annotation, on one line."""


# ---- Alertmanager's webhook, payload version 4 ------------------------------------------------


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(pattern=FINGERPRINT)

    @property
    def episode(self) -> tuple[str, str]:
        """One firing episode of one alert: re-sends of it carry the same pair."""
        return self.fingerprint, self.starts_at.isoformat()


class AlertmanagerWebhook(BaseModel):
    """https://prometheus.io/docs/alerting/latest/configuration/#webhook_config (version 4)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default={}, alias="groupLabels")
    common_labels: dict[str, str] = Field(default={}, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default={}, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AlertmanagerAlert]


class _DriftLabels(BaseModel):
    """The labels a retrain alert must carry (the alert rule copies them from the server's metric)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_name: str = Field(pattern=MODEL_NAME)
    release_id: str = Field(pattern=RELEASE_ID)
    namespace: str = Field(pattern=NAMESPACE)
    feature: str | None = Field(default=None, pattern=FEATURE)


def describe_validation(exc: ValidationError, limit: int = 3) -> str:
    """The first problems as `dotted.key: message`, never echoing the value received."""
    return describe_errors(exc, limit=limit, show_values=False, root_label="(body)")


# ---- settings ---------------------------------------------------------------------------------


class TriggerSettings(BaseModel):
    """Everything the trigger needs, validated once at start (the CLI builds it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: str = Field(pattern=REPOSITORY)
    """owner/name of the repository whose retrain.yml opens the pull request."""
    github_token: SecretStr
    """A token allowed to create repository_dispatch events (contents: write)."""
    webhook_token: SecretStr
    """The bearer token Alertmanager sends (its credentials file)."""
    github_api_url: str = GITHUB_API
    """GitHub's REST API (GitHub Enterprise: https://HOST/api/v3)."""
    stack: str = Field(default="dev", pattern=STACK)
    alert_names: frozenset[str] = frozenset({DEFAULT_ALERT})
    min_interval_seconds: float = Field(default=6 * 3600, ge=0)
    """At most one dispatch per model in this many seconds (0: no limit)."""
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_episodes: int = Field(default=10_000, ge=1)
    """Alert episodes remembered as dispatched (oldest forgotten first); also bounds the models
    the rate limit tracks."""
    github_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("github_token", "webhook_token", mode="before")
    @classmethod
    def _token_set(cls, value: Any, info: ValidationInfo) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        variable = GITHUB_TOKEN_ENV if info.field_name == "github_token" else WEBHOOK_TOKEN_ENV
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{variable} is not set (the trigger's Secret provides it)")
        if info.field_name == "webhook_token" and len(text.strip()) < 16:
            raise ValueError(f"{variable} is shorter than 16 characters: use a random token")
        return SecretStr(text.strip())

    @field_validator("github_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parsed = urlsplit(value)
        secure = parsed.scheme == "https" and bool(parsed.hostname)
        if not secure and not (parsed.scheme == "http" and parsed.hostname in _LOOPBACK):
            raise ValueError(
                f"must be https://HOST[/path] (http only for a loopback test server), got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("alert_names")
    @classmethod
    def _alert_names(cls, value: frozenset[str]) -> frozenset[str]:
        bad = sorted(name for name in value if not re.match(ALERT_NAME, name))
        if not value or bad:
            raise ValueError(f"must be at least one Prometheus alert name (not one: {bad})")
        return value

    @property
    def dispatch_url(self) -> str:
        return f"{self.github_api_url}/repos/{self.repository}/dispatches"


# ---- decisions --------------------------------------------------------------------------------


class Decision(StrEnum):
    """What happened to one alert (the `decision` label of mlops_retrain_alerts_total)."""

    DISPATCHED = "dispatched"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"
    IGNORED = "ignored"
    INVALID = "invalid"
    """A retrain alert without usable model_name / release_id / namespace labels (a rule bug)."""
    FAILED = "failed"
    """GitHub did not take the dispatch (or it was not tried after one that failed): retried."""


@dataclass(frozen=True)
class Outcome:
    fingerprint: str
    decision: Decision
    reason: str
    model_name: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "decision": self.decision.value,
            "reason": self.reason,
            "model_name": self.model_name,
        }


class DispatchError(Exception):
    """GitHub did not accept a dispatch: a 5xx or other non-2xx answer, a timeout, no connection."""


Dispatch = Callable[[RetrainPayload], Awaitable[None]]
Clock = Callable[[], float]


class _Recent:
    """Keys with the time they were added, oldest first, at most `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, float] = OrderedDict()

    def get(self, key: Hashable) -> float | None:
        return self._items.get(key)

    def add(self, key: Hashable, at: float) -> None:
        self._items[key] = at
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class _Member:
    alert: AlertmanagerAlert
    labels: _DriftLabels


class RetrainTrigger:
    """The decisions: which alerts dispatch, which are duplicates, rate-limited or ignored.

    One lock serialises handling, so two concurrent notifications of the same episode cannot
    both dispatch it (dispatches are rare; a slow GitHub delays the next notification only).
    """

    def __init__(self, settings: TriggerSettings, dispatch: Dispatch, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self._dispatch = dispatch
        self._clock = clock
        self._episodes = _Recent(settings.max_episodes)
        self._last_dispatch = _Recent(settings.max_episodes)
        self._lock = asyncio.Lock()

    @property
    def remembered(self) -> int:
        return len(self._episodes)

    async def handle(self, webhook: AlertmanagerWebhook) -> tuple[list[Outcome], str | None]:
        """Every alert's outcome, and the dispatch failure (None when every dispatch was accepted)."""
        async with self._lock:
            outcomes, groups = self._classify(webhook)
            failure = await self._dispatch_groups(groups, outcomes)
        return outcomes, failure

    def _classify(self, webhook: AlertmanagerWebhook) -> tuple[list[Outcome], dict[str, list[_Member]]]:
        outcomes: list[Outcome] = []
        groups: dict[str, list[_Member]] = {}
        seen: set[tuple[str, str]] = set()
        for alert in webhook.alerts:
            name = alert.labels.get("alertname", "")
            if alert.status != "firing":
                outcomes.append(Outcome(alert.fingerprint, Decision.IGNORED, "resolved"))
            elif name not in self.settings.alert_names:
                outcomes.append(Outcome(alert.fingerprint, Decision.IGNORED, "not a retrain alert"))
            elif alert.episode in seen or self._episodes.get(alert.episode) is not None:
                outcomes.append(Outcome(alert.fingerprint, Decision.DUPLICATE, "episode already dispatched"))
            else:
                try:
                    labels = _DriftLabels.model_validate(alert.labels)
                except ValidationError as exc:
                    outcomes.append(
                        Outcome(alert.fingerprint, Decision.INVALID, "labels " + describe_validation(exc))
                    )
                    continue
                seen.add(alert.episode)
                groups.setdefault(labels.model_name, []).append(_Member(alert, labels))
        return outcomes, groups

    async def _dispatch_groups(self, groups: dict[str, list[_Member]], outcomes: list[Outcome]) -> str | None:
        failure: str | None = None
        for model, members in groups.items():
            wait = self._wait_for(model)
            if wait > 0:
                reason = f"{model} dispatched less than {self.settings.min_interval_seconds:.0f}s ago"
                outcomes += self._mark(members, Decision.RATE_LIMITED, f"{reason}; next in {wait:.0f}s")
                continue
            if failure is not None:
                outcomes += self._mark(members, Decision.FAILED, "not tried: an earlier dispatch failed")
                continue
            try:
                await self._dispatch(self.payload(members))
            except DispatchError as exc:
                failure = str(exc)
                outcomes += self._mark(members, Decision.FAILED, failure)
                continue
            now = self._clock()
            self._last_dispatch.add(model, now)
            for member in members:
                self._episodes.add(member.alert.episode, now)
            outcomes += self._mark(members, Decision.DISPATCHED, f"repository_dispatch {EVENT_TYPE}")
        return failure

    def _wait_for(self, model: str) -> float:
        last = self._last_dispatch.get(model)
        if last is None:
            return 0.0
        return max(0.0, last + self.settings.min_interval_seconds - self._clock())

    @staticmethod
    def _mark(members: list[_Member], decision: Decision, reason: str) -> list[Outcome]:
        return [Outcome(m.alert.fingerprint, decision, reason, m.labels.model_name) for m in members]

    def payload(self, members: list[_Member]) -> RetrainPayload:
        """One dispatch for a model's new episodes: the earliest alert, every drifting feature."""
        first = min(members, key=lambda m: m.alert.starts_at)
        features = sorted({m.labels.feature for m in members if m.labels.feature})[:MAX_FEATURES]
        return RetrainPayload(
            model_name=first.labels.model_name,
            release_id=first.labels.release_id,
            namespace=first.labels.namespace,
            stack=self.settings.stack,
            fingerprint=first.alert.fingerprint,
            starts_at=first.alert.starts_at,
            features=tuple(features),
            summary=_summary(first, len(members)),
        )


def _summary(first: _Member, count: int) -> str:
    notes = first.alert.annotations
    name = first.alert.labels.get("alertname", "alert")
    default = f"{name} for {first.labels.model_name} release {first.labels.release_id}"
    text = notes.get("summary") or notes.get("description") or default
    if count > 1:
        text += f" (+{count - 1} more alerts)"
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 3] + "..."


# ---- GitHub -----------------------------------------------------------------------------------


class GitHubDispatcher:
    """POST /repos/{owner}/{repo}/dispatches; an async context manager that owns its client."""

    def __init__(self, settings: TriggerSettings) -> None:
        self._settings = settings
        self._client: Any = None

    async def __aenter__(self) -> GitHubDispatcher:
        import httpx

        self._client = httpx.AsyncClient(
            timeout=self._settings.github_timeout_seconds, follow_redirects=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def __call__(self, payload: RetrainPayload) -> None:
        import httpx

        body = {"event_type": EVENT_TYPE, "client_payload": payload.model_dump(mode="json")}
        headers = {
            "Authorization": f"Bearer {self._settings.github_token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
            "User-Agent": "mlops-retrain-trigger",
        }
        try:
            response = await self._client.post(
                self._settings.dispatch_url, content=orjson.dumps(body), headers=headers
            )
        except httpx.TimeoutException:
            raise DispatchError(
                f"GitHub did not answer within {self._settings.github_timeout_seconds:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise DispatchError(f"GitHub could not be reached: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DispatchError(f"GitHub answered {response.status_code}: {_github_message(response)}")


def _github_message(response: Any) -> str:
    try:
        message = str(orjson.loads(response.content).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    return " ".join(message.split())[:200] or "(no message)"


# ---- HTTP -------------------------------------------------------------------------------------


class _Metrics:
    """Counters with label values from fixed sets (every value present from the start, at 0)."""

    REFUSALS = ("unauthorized", "too_large", "malformed", "invalid")

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.alerts = Counter(
            "mlops_retrain_alerts",
            "Alerts by decision: dispatched, duplicate, rate_limited, ignored, invalid, failed.",
            ["decision"],
            registry=self.registry,
        )
        self.refused = Counter(
            "mlops_retrain_requests_refused",
            "Webhook requests refused before any decision, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.remembered = Gauge(
            "mlops_retrain_episodes_remembered",
            "Alert episodes remembered as dispatched.",
            registry=self.registry,
        )
        for decision in Decision:
            self.alerts.labels(decision.value)
        for reason in self.REFUSALS:
            self.refused.labels(reason)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _authorized(header: str | None, expected: bytes) -> bool:
    """`Bearer <token>`, compared as SHA-256 digests in constant time (length included)."""
    scheme, _, token = (header or "").strip().partition(" ")
    digest = hashlib.sha256(token.strip().encode()).digest()
    return hmac.compare_digest(digest, expected) and scheme.lower() == "bearer"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


class _Endpoints:
    """The trigger's HTTP endpoints and lifespan, sharing its metrics and readiness."""

    def __init__(self, settings: TriggerSettings, trigger: RetrainTrigger, github: GitHubDispatcher) -> None:
        self.settings = settings
        self.trigger = trigger
        self.github = github
        self.metrics = _Metrics()
        self.expected = hashlib.sha256(settings.webhook_token.get_secret_value().encode()).digest()
        self.ready = False

    def refuse(self, status: int, reason: str, message: str, request: Request, **headers: str) -> Response:
        self.metrics.refused.labels(reason).inc()
        client = request.client.host if request.client else "-"
        log.warning("refused reason=%s status=%d client=%s: %s", reason, status, client, message)
        return _json(status, {"error": reason, "message": message}, headers or None)

    async def _webhook(self, request: Request) -> AlertmanagerWebhook | Response:
        """The notification, or the refusal when the token, the size or the payload is wrong."""
        if not _authorized(request.headers.get("authorization"), self.expected):
            challenge = {"WWW-Authenticate": 'Bearer realm="retrain-trigger"'}
            return self.refuse(401, "unauthorized", "missing or wrong bearer token", request, **challenge)
        limit = self.settings.max_body_bytes
        try:
            body = await _read_body(request, limit)
        except _BodyTooLarge:
            return self.refuse(413, "too_large", f"body larger than {limit} bytes", request)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.refuse(400, "malformed", "body is not JSON", request)
        try:
            return AlertmanagerWebhook.model_validate(raw)
        except ValidationError as exc:
            message = "not an Alertmanager webhook (version 4): " + describe_validation(exc)
            return self.refuse(400, "invalid", message, request)

    async def alertmanager(self, request: Request) -> Response:
        webhook = await self._webhook(request)
        if not isinstance(webhook, AlertmanagerWebhook):
            return webhook
        if webhook.truncated_alerts:
            log.warning("Alertmanager left %d alerts out of the notification", webhook.truncated_alerts)
        outcomes, failure = await self.trigger.handle(webhook)
        for outcome in outcomes:
            self.metrics.alerts.labels(outcome.decision.value).inc()
            _log_outcome(outcome)
        self.metrics.remembered.set(self.trigger.remembered)
        decisions = [o.as_dict() for o in outcomes]
        if failure is not None:
            return _json(502, {"error": "dispatch_failed", "message": failure, "decisions": decisions})
        return _json(200, {"decisions": decisions})

    async def healthz(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ready" if self.ready else "not ready", 200 if self.ready else 503)

    async def metrics_page(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from starlette.responses import Response

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        async with self.github:
            self.ready = True
            log.info(
                "ready: alerts %s dispatch %s to %s (stack %s, at most one per model every %.0fs)",
                ",".join(sorted(settings.alert_names)), EVENT_TYPE, settings.dispatch_url,
                settings.stack, settings.min_interval_seconds,
            )  # fmt: skip
            yield
            self.ready = False


def create_app(settings: TriggerSettings) -> Any:
    """The ASGI app (Starlette), dispatching to GitHub's API."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    github = GitHubDispatcher(settings)
    endpoints = _Endpoints(settings, RetrainTrigger(settings, github), github)
    routes = [
        Route(WEBHOOK_PATH, endpoints.alertmanager, methods=["POST"]),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/readyz", endpoints.readyz, methods=["GET"]),
        Route("/metrics", endpoints.metrics_page, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=endpoints.lifespan)


def _log_outcome(outcome: Outcome) -> None:
    level = logging.WARNING if outcome.decision in (Decision.FAILED, Decision.INVALID) else logging.INFO
    log.log(
        level,
        "decision=%s model=%s fingerprint=%s: %s",
        outcome.decision.value, outcome.model_name or "-", outcome.fingerprint, outcome.reason,
    )  # fmt: skip


# ---- command line -----------------------------------------------------------------------------


def serve(settings: TriggerSettings) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn finishes in-flight requests, then exits 0)."""
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the process would end "killed";
        # a drained stop is a clean exit (0), which is what Kubernetes should see.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.force_exit = self.should_exit
            self.should_exit = True

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    Server(config).run()


def _option(name: str, help: str) -> Any:
    """A flag, else MLOPS_RETRAIN_<NAME>; unset stays None, so TriggerSettings gives the default."""
    import typer

    field = TriggerSettings.model_fields[name]
    default = None if field.is_required() else field.default
    shown = ",".join(sorted(default)) if isinstance(default, frozenset) else default
    return typer.Option(
        envvar=f"MLOPS_RETRAIN_{name.upper()}", help=help, show_default=False if shown is None else str(shown)
    )


def main(
    repository: Annotated[str, _option("repository", "owner/name of the repository with retrain.yml.")],
    stack: Annotated[str | None, _option("stack", "The stack whose dataset the workflow bumps.")] = None,
    github_api_url: Annotated[str | None, _option("github_api_url", "GitHub's REST API.")] = None,
    alert_names: Annotated[str | None, _option("alert_names", "Comma-separated alert names.")] = None,
    min_interval_seconds: Annotated[
        float | None, _option("min_interval_seconds", "At most one dispatch per model this often.")
    ] = None,
    host: Annotated[str | None, _option("host", "Address to bind.")] = None,
    port: Annotated[int | None, _option("port", "Port for the webhook, health and /metrics.")] = None,
    max_body_bytes: Annotated[
        int | None, _option("max_body_bytes", "Largest webhook body (413 beyond).")
    ] = None,
    max_episodes: Annotated[int | None, _option("max_episodes", "Alert episodes remembered.")] = None,
    github_timeout_seconds: Annotated[
        float | None, _option("github_timeout_seconds", "Bound on one GitHub call (502 beyond).")
    ] = None,
    log_level: Annotated[str | None, _option("log_level", "debug, info, warning or error.")] = None,
) -> None:
    """Receive Alertmanager's webhook and dispatch `mlops-retrain` to GitHub. Tokens: env only."""
    import typer

    names = None if alert_names is None else {n.strip() for n in alert_names.split(",") if n.strip()}
    given = {
        "repository": repository,
        "github_token": os.environ.get(GITHUB_TOKEN_ENV, ""),
        "webhook_token": os.environ.get(WEBHOOK_TOKEN_ENV, ""),
        "github_api_url": github_api_url,
        "stack": stack,
        "alert_names": names,
        "min_interval_seconds": min_interval_seconds,
        "host": host,
        "port": port,
        "max_body_bytes": max_body_bytes,
        "max_episodes": max_episodes,
        "github_timeout_seconds": github_timeout_seconds,
        "log_level": None if log_level is None else log_level.lower(),
    }
    try:
        settings = TriggerSettings.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {describe_validation(exc, limit=10)}", err=True)
        raise typer.Exit(2) from None
    serve(settings)


if __name__ == "__main__":
    import typer

    typer.run(main)
