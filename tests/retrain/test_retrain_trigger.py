"""The retrain trigger, end to end: the real process, a loopback stand-in of GitHub.

Each test uses model names of its own, so the module's one trigger process (whose memory of
dispatched episodes and rate limits lives across tests) never couples two tests.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from model.retrain_trigger import (
    AlertmanagerWebhook,
    Decision,
    DispatchError,
    Outcome,
    RetrainPayload,
    RetrainTrigger,
    TriggerSettings,
)
from tests.retrain.conftest import (
    GITHUB_TOKEN,
    REPO,
    WEBHOOK_TOKEN,
    FakeGitHub,
    TriggerProcess,
    alert,
    start_trigger,
    webhook,
)
from tests.services import free_port

pytestmark = pytest.mark.integration


def decisions(response: httpx.Response) -> list[str]:
    return [d["decision"] for d in response.json()["decisions"]]


def test_a_firing_drift_alert_dispatches_once_with_the_right_request(
    trigger: TriggerProcess, gh: FakeGitHub
) -> None:
    body = webhook(alert("cancer-a", "aa01", feature="mean radius", summary="PSI 0.31 on mean radius"))
    response = trigger.post(body)
    assert response.status_code == 200, response.text
    assert decisions(response) == ["dispatched"]
    (call,) = gh.all()
    assert call.method == "POST" and call.path == "/repos/acme/models/dispatches"
    assert call.headers["Authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert call.headers["Accept"] == "application/vnd.github+json"
    assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert call.json() == {
        "event_type": "mlops-retrain",
        "client_payload": {
            "model_name": "cancer-a",
            "release_id": "0123456789ab",
            "namespace": "mlops-dev",
            "stack": "dev",
            "fingerprint": "aa01",
            "starts_at": "2025-06-01T10:00:00Z",
            "features": ["mean radius"],
            "summary": "PSI 0.31 on mean radius",
        },
    }
    # The workflow's side reads the same payload with the same model.
    RetrainPayload.model_validate(call.json()["client_payload"])


def test_the_same_episode_never_dispatches_twice(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    body = webhook(alert("cancer-b", "bb01"))
    assert decisions(trigger.post(body)) == ["dispatched"]
    for _ in range(3):  # Alertmanager's repeat_interval re-sends
        response = trigger.post(body)
        assert response.status_code == 200 and decisions(response) == ["duplicate"]
    assert len(gh.all()) == 1
    # A new episode of the same alert (it resolved, then fired again) is a new startsAt; the
    # model's rate limit still holds it back.
    again = trigger.post(webhook(alert("cancer-b", "bb01", starts_at="2025-06-02T10:00:00Z")))
    assert decisions(again) == ["rate_limited"] and len(gh.all()) == 1


def test_rate_limit_is_per_model(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    assert decisions(trigger.post(webhook(alert("cancer-c", "cc01")))) == ["dispatched"]
    limited = trigger.post(webhook(alert("cancer-c", "cc02", feature="worst area")))
    assert limited.status_code == 200  # a non-2xx would only make Alertmanager retry
    assert decisions(limited) == ["rate_limited"]
    assert "next in" in limited.json()["decisions"][0]["reason"]
    assert len(gh.all()) == 1
    other = trigger.post(webhook(alert("cancer-d", "cc03")))
    assert decisions(other) == ["dispatched"]
    assert [r.json()["client_payload"]["model_name"] for r in gh.all()] == ["cancer-c", "cancer-d"]


def test_one_dispatch_per_model_names_every_drifting_feature(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    body = webhook(
        alert("cancer-e", "ee02", feature="worst area", starts_at="2025-06-01T10:05:00Z"),
        alert("cancer-e", "ee01", feature="mean radius", starts_at="2025-06-01T10:00:00Z"),
        alert("cancer-f", "ee03", feature="mean radius"),
    )
    response = trigger.post(body)
    assert decisions(response) == ["dispatched"] * 3
    payloads = {r.json()["client_payload"]["model_name"]: r.json()["client_payload"] for r in gh.all()}
    assert set(payloads) == {"cancer-e", "cancer-f"}
    assert payloads["cancer-e"]["features"] == ["mean radius", "worst area"]
    assert payloads["cancer-e"]["fingerprint"] == "ee01"  # the earliest alert
    assert payloads["cancer-e"]["summary"].endswith("(+1 more alerts)")
    # Both episodes of cancer-e are remembered, not only the one the payload names.
    assert decisions(trigger.post(webhook(alert("cancer-e", "ee02", starts_at="2025-06-01T10:05:00Z")))) == [
        "duplicate"
    ]


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        (None, "no header"),
        (f"Bearer {WEBHOOK_TOKEN}x", "wrong token"),
        (f"Bearer {WEBHOOK_TOKEN[:-1]}", "a prefix of the token"),
        (f"Basic {WEBHOOK_TOKEN}", "wrong scheme"),
        ("Bearer", "empty token"),
    ],
)
def test_without_the_token_nothing_is_dispatched(
    trigger: TriggerProcess, gh: FakeGitHub, authorization: str | None, why: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = trigger.post(webhook(alert("cancer-g", "ff01")), token=None, headers=headers)
    assert response.status_code == 401, why
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert gh.all() == []


def test_bad_bodies_get_a_4xx_naming_the_problem_and_nothing_is_dispatched(
    trigger: TriggerProcess, gh: FakeGitHub
) -> None:
    good = webhook(alert("cancer-h", "ab01"))
    no_fingerprint = json.loads(json.dumps(good))
    del no_fingerprint["alerts"][0]["fingerprint"]
    pending = json.loads(json.dumps(good))
    pending["alerts"][0]["status"] = "pending"
    cases: list[tuple[bytes | dict[str, object] | list[int], int, str, str]] = [
        (b"{not json", 400, "malformed", "not JSON"),
        (b"", 400, "malformed", "not JSON"),
        ({**good, "version": "3"}, 400, "invalid", "version"),
        (no_fingerprint, 400, "invalid", "alerts.0.fingerprint"),
        (pending, 400, "invalid", "alerts.0.status"),
        ({**good, "alerts": "none"}, 400, "invalid", "alerts"),
        ([1, 2], 400, "invalid", "(body)"),
        ({**good, "padding": "x" * 70_000}, 413, "too_large", "65536 bytes"),
    ]
    for body, status, code, names in cases:
        response = trigger.post(body)
        assert response.status_code == status, body if isinstance(body, bytes) else str(body)[:80]
        assert response.json()["error"] == code
        assert names in response.json()["message"], response.json()
    assert gh.all() == []


def test_an_oversized_chunked_body_is_refused_while_it_streams(
    trigger: TriggerProcess, gh: FakeGitHub
) -> None:
    def chunks():
        for _ in range(100):
            yield b" " * 4096  # JSON whitespace: only its size is wrong

    response = httpx.post(
        trigger.url + "/alertmanager",
        content=chunks(),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert gh.all() == []


def test_resolved_alerts_and_other_alert_names_are_ignored(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    body = webhook(
        alert("cancer-i", "ac01", status="resolved"),
        alert("cancer-i", "ac02", name="MLOpsHighLatency"),
        alert("cancer-i", "ac03", drop=("model_name",)),
        alert("cancer-i", "ac04", release_id="not-a-release"),
    )
    response = trigger.post(body)
    assert response.status_code == 200
    assert decisions(response) == ["ignored", "ignored", "invalid", "invalid"]
    reasons = [d["reason"] for d in response.json()["decisions"]]
    assert reasons[0] == "resolved" and reasons[1] == "not a retrain alert"
    assert "model_name" in reasons[2] and "release_id" in reasons[3]
    assert gh.all() == []


def test_a_github_failure_is_502_and_the_retry_dispatches_exactly_once(
    trigger: TriggerProcess, gh: FakeGitHub
) -> None:
    body = webhook(alert("cancer-j", "ad01"), alert("cancer-k", "ad02"))
    gh.status = 500
    failed = trigger.post(body)
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"] == "dispatch_failed" and "GitHub answered 500" in failed.json()["message"]
    assert decisions(failed) == ["failed", "failed"]
    assert len(gh.all()) == 1  # the second model was not tried against a failing GitHub
    assert gh.accepted() == []

    gh.status = 204  # GitHub recovers; Alertmanager retries the same notification
    retried = trigger.post(body)
    assert retried.status_code == 200 and decisions(retried) == ["dispatched", "dispatched"]
    assert sorted(r.json()["client_payload"]["model_name"] for r in gh.accepted()) == ["cancer-j", "cancer-k"]
    assert decisions(trigger.post(body)) == ["duplicate", "duplicate"]
    assert len(gh.accepted()) == 2


def test_a_github_timeout_or_refusal_is_502(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    gh.delay, gh.status = 2.0, 503  # the trigger waits 1 s (--github-timeout-seconds)
    slow = trigger.post(webhook(alert("cancer-l", "ae01")))
    assert slow.status_code == 502 and "did not answer within 1s" in slow.json()["message"]
    gh.delay, gh.status = 0.0, 404  # e.g. a token without access to the repository
    refused = trigger.post(webhook(alert("cancer-l", "ae01")))
    assert (
        refused.status_code == 502 and "GitHub answered 404: stand-in says 404" in refused.json()["message"]
    )
    gh.status = 204
    assert decisions(trigger.post(webhook(alert("cancer-l", "ae01")))) == ["dispatched"]
    assert len(gh.accepted()) == 1


def test_concurrent_copies_of_one_alert_dispatch_once(trigger: TriggerProcess, gh: FakeGitHub) -> None:
    gh.delay = 0.3  # widen the window in which a second copy could slip through
    body = webhook(alert("cancer-m", "af01"))
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: trigger.post(body), range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 6
    assert sorted(d for r in responses for d in decisions(r)) == ["dispatched"] + ["duplicate"] * 5
    assert len(gh.all()) == 1


def test_health_metrics_and_a_log_line_per_decision_without_tokens(
    trigger: TriggerProcess, gh: FakeGitHub
) -> None:
    assert httpx.get(trigger.url + "/healthz").status_code == 200
    assert httpx.get(trigger.url + "/readyz").status_code == 200
    assert httpx.get(trigger.url + "/alertmanager").status_code == 405
    trigger.post(webhook(alert("cancer-n", "b001")))
    trigger.post(webhook(alert("cancer-n", "b001")))
    trigger.post(webhook(alert("cancer-n", "b001")), token="wrong-token-wrong-token")
    text = httpx.get(trigger.url + "/metrics").text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("mlops_retrain_alerts_total", "mlops_retrain_requests_refused_total"))
    }
    for decision in Decision:
        assert f'mlops_retrain_alerts_total{{decision="{decision.value}"}}' in values
    assert values['mlops_retrain_alerts_total{decision="dispatched"}'] >= 1
    assert values['mlops_retrain_alerts_total{decision="duplicate"}'] >= 1
    assert values['mlops_retrain_requests_refused_total{reason="unauthorized"}'] >= 1
    log = trigger.log_text()
    assert "decision=dispatched model=cancer-n fingerprint=b001" in log
    assert "decision=duplicate model=- fingerprint=b001" in log
    assert "refused reason=unauthorized" in log
    assert GITHUB_TOKEN not in log and WEBHOOK_TOKEN not in log


def test_an_unreachable_github_is_502(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    process = start_trigger(tmp_path, closed)
    try:
        response = process.post(webhook(alert("cancer-o", "c001")))
        assert response.status_code == 502
        assert "could not be reached" in response.json()["message"]
        assert decisions(response) == ["failed"]
    finally:
        assert process.stop() == 0  # SIGTERM: a clean exit


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"MLOPS_RETRAIN_WEBHOOK_TOKEN": ""}, [], "MLOPS_RETRAIN_WEBHOOK_TOKEN is not set"),
        ({"MLOPS_RETRAIN_GITHUB_TOKEN": ""}, [], "MLOPS_RETRAIN_GITHUB_TOKEN is not set"),
        ({"MLOPS_RETRAIN_WEBHOOK_TOKEN": "short"}, [], "shorter than 16 characters"),
        ({}, ["--repository", "acme"], "repository: String should match pattern"),
        ({}, ["--github-api-url", "http://github.example.com"], "must be https://"),
        ({"MLOPS_RETRAIN_MIN_INTERVAL_SECONDS": "-1"}, [], "min_interval_seconds"),
        ({}, ["--alert-names", "Drift Alert"], "Prometheus alert name"),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(env: dict[str, str], args: list[str], message: str) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "MLOPS_RETRAIN_GITHUB_TOKEN": GITHUB_TOKEN,
        "MLOPS_RETRAIN_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "MLOPS_RETRAIN_REPOSITORY": "acme/models",
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "model.retrain_trigger", "--port", "0", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert GITHUB_TOKEN not in proc.stderr and WEBHOOK_TOKEN not in proc.stderr


# ---- the decisions in process: a clock we control, memory bounds ----------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: object) -> TriggerSettings:
    values: dict[str, object] = {
        "repository": "acme/models",
        "github_token": GITHUB_TOKEN,
        "webhook_token": WEBHOOK_TOKEN,
        "min_interval_seconds": 600,
    }
    values.update(overrides)
    return TriggerSettings.model_validate(values)


def _handle(trigger: RetrainTrigger, *alerts: dict[str, object]) -> tuple[list[Outcome], str | None]:
    # A loop of its own, never installed as the thread's: Pulumi's mocks (other test modules)
    # read the thread's event loop.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(trigger.handle(AlertmanagerWebhook.model_validate(webhook(*alerts))))
    finally:
        loop.close()


def _run(trigger: RetrainTrigger, *alerts: dict[str, object]) -> list[Decision]:
    outcomes, _ = _handle(trigger, *alerts)
    return [o.decision for o in outcomes]


def test_a_rate_limited_alert_dispatches_once_the_interval_passed() -> None:
    sent: list[RetrainPayload] = []

    async def dispatch(payload: RetrainPayload) -> None:
        sent.append(payload)

    clock = _Clock()
    trigger = RetrainTrigger(_settings(), dispatch, clock)
    assert _run(trigger, alert("m", "01")) == [Decision.DISPATCHED]
    clock.now += 599
    assert _run(trigger, alert("m", "02")) == [Decision.RATE_LIMITED]
    clock.now += 2  # the limited episode was not remembered: its next re-send goes through
    assert _run(trigger, alert("m", "02")) == [Decision.DISPATCHED]
    assert [p.fingerprint for p in sent] == ["01", "02"]


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    async def dispatch(payload: RetrainPayload) -> None:
        pass

    trigger = RetrainTrigger(_settings(max_episodes=3, min_interval_seconds=0), dispatch, _Clock())
    for index in range(10):
        assert _run(trigger, alert(f"m{index}", f"{index:02d}")) == [Decision.DISPATCHED]
    assert trigger.remembered == 3
    assert _run(trigger, alert("m9", "09")) == [Decision.DUPLICATE]  # recent: remembered
    assert _run(trigger, alert("m0", "00")) == [Decision.DISPATCHED]  # oldest: forgotten


def test_a_failed_dispatch_is_not_remembered() -> None:
    calls: list[str] = []

    async def dispatch(payload: RetrainPayload) -> None:
        calls.append(payload.fingerprint)
        if len(calls) == 1:
            raise DispatchError("GitHub answered 503: later")

    trigger = RetrainTrigger(_settings(), dispatch, _Clock())
    outcomes, failure = _handle(trigger, alert("m", "01"))
    assert failure == "GitHub answered 503: later" and outcomes[0].decision is Decision.FAILED
    assert _run(trigger, alert("m", "01")) == [Decision.DISPATCHED]
    assert calls == ["01", "01"]


def test_the_payload_is_bounded_and_single_line() -> None:
    members = [alert("m", f"{i:02x}", feature=f"f{i:03d}") for i in range(80)]
    members[0]["annotations"] = {"summary": "line one\nline two\t" + "x" * 900}
    sent: list[RetrainPayload] = []

    async def dispatch(payload: RetrainPayload) -> None:
        sent.append(payload)

    _run(RetrainTrigger(_settings(), dispatch, _Clock()), *members)
    (payload,) = sent
    assert len(payload.features) == 50 and payload.features[0] == "f000"
    assert payload.summary.startswith("line one line two x") and len(payload.summary) == 500
    assert payload.starts_at == datetime(2025, 6, 1, 10, tzinfo=UTC)


def test_the_serving_image_installs_what_the_trigger_loads(tmp_path: Path) -> None:
    """The trigger runs from the serving image: everything its start-up path loads is installed there."""
    from tests.server.test_images import _installed_by, _loaded_by

    code = f"""
import asyncio
import typer
from uvicorn.config import Config
from model.retrain_trigger import GitHubDispatcher, TriggerSettings, create_app, main
settings = TriggerSettings(repository="acme/models", github_token="t", webhook_token={WEBHOOK_TOKEN!r})
config = Config(create_app(settings))
config.load()
config.get_loop_factory()
async def client():
    async with GitHubDispatcher(settings):
        pass
asyncio.run(client())
app = typer.Typer()
app.command()(main)
typer.main.get_command(app)
"""
    loaded = _loaded_by(code, tmp_path=tmp_path)
    assert {"httpx", "starlette", "uvicorn", "pydantic", "prometheus-client", "typer"} <= loaded
    missing = loaded - _installed_by(REPO / "images" / "Dockerfile.serve")
    assert not missing, f"images/Dockerfile.serve does not install {sorted(missing)}"
