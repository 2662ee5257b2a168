"""The dev and prod stacks through the real engine on a real single-node cluster.

`pulumi up` of dev creates the namespace, the bucket, the image registry and MLflow, runs the
training Job `train-<release_id>` (which really trains, gates and registers), reads the release
record back, rolls out the server, and moves `champion` after the rollout. Then, in order, on
the same stacks: an alias moved by hand shows up in `pulumi preview --refresh`; a new version
of the dataset is previewed as a Job replacement and a serving update and rolled out with zero
failed requests under steady load; a new commit changes nothing; a Job that fails for a
transient reason (its pods cannot reach the artifact store) is retried as docs/deploy.md says;
prod, pointed at a tracking server and a bucket outside the cluster, serves the release dev
proved (`mlops promote dev prod` copies, registers and pins it in its stack file) with the
same predictions; a failing gate fails `pulumi up` at once and leaves serving alone; `pulumi
destroy` leaves nothing behind.

Traffic goes only to loopback, to the cluster's bridge address and to its service addresses.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import GRPCInferenceServiceStub
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from infra.cli import app
from infra.stack_file import read_pin
from model.artifact import REGISTRATION_FILE, Registration, ReleaseMetadata, load_sklearn_model
from model.registry import RELEASE_TAG
from tests.cluster.conftest import Cluster, pod_manifest
from tests.engine.conftest import REPO, Engine, changed_steps, new_engine
from tests.services import MlflowService, S3Service, start_mlflow, start_seaweedfs

# Each step waits for real rollouts and trainings: longer than the suite's 10-minute default.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(40 * 60)]

MODEL = "breast-cancer"
UP_TIMEOUT = 20 * 60
MLFLOW_ON_HOST = "http://localhost:30550"  # the dev stack's MLflow NodePort
JOB_URN_TYPE = "kubernetes:batch/v1:Job::training-job"


@dataclass
class Stacks:
    """What the tests of this module share, in the order they run."""

    cluster: Cluster
    engine: Engine
    s3: S3Service
    bucket: str
    data_bucket: str
    releases: list[str] = field(default_factory=list)
    """Release ids dev served, oldest first."""

    def up(self, stack: str, *extra: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
        run = self.engine.pulumi(
            "up", "--yes", "--skip-preview", *extra, stack=stack, timeout=UP_TIMEOUT, env=env
        )
        return run.check() if check else run

    def outputs(self, stack: str) -> dict[str, Any]:
        return dict(json.loads(self.engine.pulumi("stack", "output", "--json", stack=stack).check().stdout))

    def service_url(self, namespace: str, port: str = "http") -> str:
        """The Service's `port` by its cluster IP (`http://ip:80`; gRPC: `ip:8081`, a channel target)."""
        spec = self.cluster.get_json("-n", namespace, "service", MODEL)["spec"]
        number = next(p["port"] for p in spec["ports"] if p["name"] == port)
        return f"http://{spec['clusterIP']}:{number}" if port == "http" else f"{spec['clusterIP']}:{number}"

    def put_dataset(self, key: str, rows: int) -> str:
        frame = load_breast_cancer(as_frame=True).frame.iloc[:rows]
        self.s3.client().put_object(Bucket=self.data_bucket, Key=key, Body=frame.to_csv(index=False).encode())
        return f"s3://{self.data_bucket}/{key}"

    def set_training(self, **fields: Any) -> None:
        config = self.engine.stack_config("dev")
        config["mlops:training"] = {**config["mlops:training"], **fields}
        self.engine.write_stack_config("dev", config)


def _rows(n: int = 20) -> list[list[float]]:
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    return [[float(v) for v in row] for row in frame.iloc[:n].to_numpy()]


def _columns() -> list[str]:
    return [str(c) for c in load_breast_cancer(as_frame=True).frame.drop(columns="target").columns]


def _predict(url: str, rows: list[list[float]]) -> tuple[list[Any], httpx.Headers]:
    body = {"dataframe_split": {"columns": _columns(), "data": rows}}
    response = httpx.post(f"{url}/invocations", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"]), response.headers


def _served_release(url: str, expected: str, within_s: float = 30) -> str:
    """The release the Service answers with, once it is `expected` or `within_s` passed. `pulumi up`
    returns when the new pods are available; the old ones drain (preStop) while kube-proxy takes
    their endpoints out, so a request in the next second or two may still reach the old release."""
    deadline = time.monotonic() + within_s
    while True:
        release = str(_predict(url, _rows(1))[1]["x-mlops-release-id"])
        if release == expected or time.monotonic() > deadline:
            return release
        time.sleep(0.5)


def _predict_grpc(target: str, rows: list[list[float]]) -> tuple[list[int], str]:
    """The Open Inference Protocol's ModelInfer over gRPC: (labels, release id from ModelMetadata)."""
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), len(rows[0])])
        request.raw_input_contents.append(np.asarray(rows, dtype="<f8").tobytes())
        request.outputs.add(name="predict")
        response = stub.ModelInfer(request, timeout=10)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10)
    return np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist(), metadata.properties[
        "release_id"
    ]


def _in_process(s3: S3Service, model_uri: str, rows: list[list[float]], tmp: Path) -> list[Any]:
    """What the release's own scikit-learn pipeline predicts, loaded from the bucket here."""
    bucket, _, prefix = model_uri.removeprefix("s3://").partition("/")
    client = s3.client()
    folder = tmp / prefix
    for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]:
        path = tmp / item["Key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, item["Key"], str(path))
    metadata = ReleaseMetadata.from_json((folder / "release.json").read_text())
    pipeline = load_sklearn_model(folder / "model", metadata.estimator, metadata.task, metadata.model_sha256)
    import pandas as pd

    return [int(v) for v in pipeline.predict(pd.DataFrame(rows, columns=_columns()))]


class SteadyLoad:
    """One request after another on a new connection each (as clients of a Service would), until
    stopped or `limit_s` passed; records every failure."""

    def __init__(self, url: str, limit_s: float = UP_TIMEOUT) -> None:
        self.url, self.limit_s = url, limit_s
        self.ok = 0
        self.failures: list[str] = []
        self.releases: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        body = {"dataframe_split": {"columns": _columns(), "data": _rows(1)}}
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = httpx.post(f"{self.url}/invocations", json=body, timeout=5)
                if response.status_code == 200:
                    self.ok += 1
                    self.releases.add(response.headers.get("x-mlops-release-id", "?"))
                else:
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _versions(name: str, tracking_uri: str = MLFLOW_ON_HOST) -> dict[str, str]:
    """version -> release id, of every registered version of `name`."""
    client = MlflowClient(tracking_uri, tracking_uri)
    return {
        str(v.version): v.tags.get(RELEASE_TAG, "") for v in client.search_model_versions(f"name = '{name}'")
    }


def _alias(alias: str, tracking_uri: str = MLFLOW_ON_HOST) -> str | None:
    client = MlflowClient(tracking_uri, tracking_uri)
    value = (client.get_registered_model(MODEL).aliases or {}).get(alias)
    return None if value is None else str(value)


def _job_pods(cluster: Cluster, namespace: str, release_id: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("-n", namespace, "pods", "-l", f"job-name=train-{release_id}")["items"]
    return list(pods)


def _exit_codes(pods: list[dict[str, Any]]) -> list[int]:
    codes = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []):
            terminated = status.get("state", {}).get("terminated")
            if terminated:
                codes.append(int(terminated["exitCode"]))
    return codes


@pytest.fixture(scope="module")
def stacks(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    root = tmp_path_factory.mktemp("cluster-stacks")
    for namespace in (
        "mlops-dev",
        "mlops-prod",
        "monitoring",
    ):  # left by an interrupted run on a kept cluster
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=180s", timeout=200)
    # The artifact store on the host's bridge address: the one host address pods may reach.
    s3 = start_seaweedfs(root / "seaweedfs", host=str(cluster.bridge_ip))
    engine = new_engine(root)
    shared = Stacks(cluster, engine, s3, f"dev-{uuid.uuid4().hex[:8]}", s3.make_bucket("datasets"))
    config = engine.stack_config("dev")
    config.update(
        {
            "mlops:kubernetes": {"kubeconfig": str(cluster.kubeconfig_flat)},
            "mlops:images": dict(cluster.images),
            "mlops:artifacts": {
                "bucket": shared.bucket,
                "endpoint_url": s3.endpoint_url,
                "force_destroy": True,
            },
            "mlops:training_job": {"timeout_minutes": 15, "active_deadline_seconds": 900},
            # Two server processes per pod: rollouts, scrapes and the drift alert go through the
            # supervisor and its workers (prod's stack has two as well).
            "mlops:serving": {"replicas": 1, "max_replicas": 2, "drain_seconds": 3, "workers": 2},
            # Prometheus and Alertmanager from this machine's images (no Grafana image here),
            # quick enough for a test: 5 s scrapes and evaluations, drift fires once it holds.
            "mlops:monitoring": {
                **config["mlops:monitoring"],
                "scrape_interval": "5s",
                "grafana": {"enabled": False},
                "thresholds": {"drift_for": "0s", "drift_min_window_rows": 200},
            },
        }
    )
    config["mlops:training"] = {
        **config["mlops:training"],
        "dataset": shared.put_dataset("bc/v1.csv", 569),
        "params": {"n_estimators": 30, "max_depth": 6},
    }
    engine.write_stack_config("dev", config)
    engine.pulumi("stack", "init", "dev").check()
    for key, value in (
        ("mlops:s3_access_key_id", s3.access_key),
        ("mlops:s3_secret_access_key", s3.secret_key),
    ):
        engine.pulumi("config", "set", "--secret", key, value, stack="dev").check()
    try:
        yield shared
    finally:
        for stack in ("prod", "dev"):  # whatever a failed test left behind
            if engine.pulumi("stack", "select", stack).returncode == 0:
                engine.pulumi("destroy", "--yes", "--skip-preview", stack=stack, timeout=UP_TIMEOUT)
        s3.stop()


def test_up_trains_in_a_job_registers_rolls_out_and_serves(stacks: Stacks, tmp_path: Path) -> None:
    cluster = stacks.cluster
    stacks.up("dev")
    out = stacks.outputs("dev")
    rid, version = out["release_id"], out["model_version"]
    stacks.releases.append(rid)
    # The Job ran to completion under its release's name, and registered that release.
    job = cluster.get_json("-n", "mlops-dev", "job", f"train-{rid}")
    assert job["status"].get("succeeded") == 1, job["status"]
    assert _versions(MODEL) == {version: rid}
    assert _alias("candidate") == version and _alias("champion") == version
    assert out["champion"] == {"alias": "champion", "version": version}
    # The release record the Job wrote was read back: checksum and version reach the pods.
    registration = stacks.s3.client().get_object(
        Bucket=stacks.bucket, Key=f"{MODEL}/{rid}/{REGISTRATION_FILE}"
    )
    assert Registration.from_json(registration["Body"].read().decode()).version == version
    deployment = cluster.get_json("-n", "mlops-dev", "deployment", f"{MODEL}-stable")
    assert deployment["status"].get("readyReplicas") == 1
    pod = deployment["spec"]["template"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLOPS_MODEL_VERSION"] == version and len(env["MLOPS_MODEL_SHA256"]) == 64
    assert pod["metadata"]["labels"]["mlops.dev/release"] == rid
    # Each worker took its CPUs from the pod's limit (1 on this 2-core node), read from the
    # container's cgroup: no CPU to spare for a model thread, so model calls stay on its loop.
    log = cluster.kubectl("-n", "mlops-dev", "logs", f"deployment/{MODEL}-stable").stdout
    assert log.count("run on the event loop (2 server processes, 1 CPUs)") == 2, log
    # A prediction through the Service equals the release's own pipeline, in this process.
    rows = _rows()
    served, headers = _predict(stacks.service_url("mlops-dev"), rows)
    assert headers["x-mlops-release-id"] == rid
    assert served == _in_process(stacks.s3, out["model_uri"], rows, tmp_path)
    # The same through the Service's gRPC port (the Open Inference Protocol), named in the outputs.
    assert out["serving_grpc_target"] == f"{MODEL}.mlops-dev.svc.cluster.local:8081"
    assert _predict_grpc(stacks.service_url("mlops-dev", "grpc"), rows) == (served, rid)


def _reaches(cluster: Cluster, name: str, labels: dict[str, str], host: str, port: int) -> bool:
    """Whether a pod with `labels` in the dev namespace opens a TCP connection to host:port."""
    probe = pod_manifest(
        name,
        "mlops-dev",
        cluster.images["serving"],
        ["python", "-c", f"import socket; socket.create_connection(({host!r}, {port}), timeout=5)"],
    )
    probe["metadata"]["labels"].update(labels)
    cluster.apply(probe)
    try:
        return cluster.wait_pod(name, "mlops-dev")["status"]["phase"] == "Succeeded"
    finally:
        cluster.kubectl("-n", "mlops-dev", "delete", "pod", name, "--wait=false", check=False)


def test_the_stack_namespace_admits_only_the_flows_it_declares(stacks: Stacks) -> None:
    """The stack's NetworkPolicies, enforced by the cluster (docs/network.md): the flows the
    release used above were allowed; a pod the stack does not know reaches neither MLflow nor
    the model server, and the server's declared clients (`mlops.dev/client-of`) reach it."""
    cluster = stacks.cluster
    server = f"{MODEL}.mlops-dev.svc.cluster.local"
    assert not _reaches(cluster, "np-stranger-mlflow", {}, "mlflow.mlops-dev.svc.cluster.local", 5000)
    assert not _reaches(cluster, "np-stranger-server", {}, server, 80)
    assert not _reaches(cluster, "np-stranger-grpc", {}, server, 8081)
    assert _reaches(cluster, "np-client-server", {"mlops.dev/client-of": MODEL}, server, 80)
    assert _reaches(cluster, "np-client-grpc", {"mlops.dev/client-of": MODEL}, server, 8081)


def _monitoring_api(cluster: Cluster, service: str, path: str) -> Any:
    spec = cluster.get_json("-n", "monitoring", "service", service)["spec"]
    response = httpx.get(f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _eventually(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(2)
    return found


def test_prometheus_scrapes_the_server_and_drift_reaches_alertmanager(stacks: Stacks) -> None:
    cluster, rid = stacks.cluster, stacks.releases[-1]
    # Pod discovery in mlops-dev (its Role), the serving NetworkPolicy admitting the scraper.
    targets = _eventually(
        "a healthy scrape of the serving pod",
        lambda: [
            t
            for t in _monitoring_api(cluster, "prometheus", "/api/v1/targets")["data"]["activeTargets"]
            if t["health"] == "up" and t["labels"].get("namespace") == "mlops-dev"
        ],
    )
    assert {t["labels"]["track"] for t in targets} == {"stable"}, targets
    info = _monitoring_api(cluster, "prometheus", "/api/v1/query?query=mlops_server_model_info")
    assert {r["metric"]["release_id"] for r in info["data"]["result"]} == {rid}, info
    # Shifted traffic through the Service: the drift alert reaches Alertmanager, for this release.
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    shifted = frame.copy()
    shifted[shifted.columns[:3]] *= 3
    body = {"dataframe_split": {"columns": _columns(), "data": shifted.to_numpy().tolist()}}
    assert (
        httpx.post(f"{stacks.service_url('mlops-dev')}/invocations", json=body, timeout=30).status_code == 200
    )
    alerts = _eventually(
        "the drift alert in Alertmanager",
        lambda: [
            a
            for a in _monitoring_api(cluster, "alertmanager", "/api/v2/alerts")
            if a["labels"]["alertname"] == "MLOpsModelDrift"
        ],
    )
    assert {a["labels"]["release_id"] for a in alerts} == {rid}, alerts
    assert {a["labels"]["feature"] for a in alerts} <= set(shifted.columns[:3]), alerts
    rules = _monitoring_api(cluster, "prometheus", "/api/v1/rules")["data"]["groups"]
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_an_alias_moved_by_hand_shows_in_preview_refresh(stacks: Stacks) -> None:
    client = MlflowClient(MLFLOW_ON_HOST, MLFLOW_ON_HOST)
    served = _alias("champion")
    stray = client.create_model_version(MODEL, f"s3://{stacks.bucket}/elsewhere/model").version
    client.set_registered_model_alias(MODEL, "champion", stray)
    stacks.engine.pulumi("preview", "--expect-no-changes", stack="dev").check()  # the state cannot know
    changes = changed_steps(stacks.engine.preview_json("dev", "--refresh"))
    assert changes == {"pulumi-python:dynamic:Resource::champion": {"update"}}, changes
    stacks.up("dev", "--refresh")
    assert _alias("champion") == served
    client.delete_model_version(MODEL, stray)


def test_a_new_dataset_version_rolls_out_with_zero_failed_requests(stacks: Stacks) -> None:
    old = stacks.releases[-1]
    stacks.set_training(dataset=stacks.put_dataset("bc/v2.csv", 560))
    changes = changed_steps(stacks.engine.preview_json("dev"))
    replaced = {"create-replacement", "replace", "delete-replaced"}
    assert changes[JOB_URN_TYPE] & replaced, changes
    assert changes["kubernetes:apps/v1:Deployment::serving-deployment"] == {"update"}, changes
    assert set(changes) == {
        JOB_URN_TYPE,
        "kubernetes:core/v1:ConfigMap::training-spec",
        "pulumi-python:dynamic:Resource::training-record",
        "kubernetes:apps/v1:Deployment::serving-deployment",
        "pulumi-python:dynamic:Resource::champion",
    }, changes

    with SteadyLoad(stacks.service_url("mlops-dev")) as load:
        stacks.up("dev")
        time.sleep(2)  # a few requests after the rollout too
    new = stacks.outputs("dev")["release_id"]
    stacks.releases.append(new)
    assert new != old
    assert load.failures == [], load.failures[:10]
    assert load.ok > 50 and load.releases == {old, new}, (load.ok, load.releases)
    registered = _versions(MODEL)
    assert set(registered.values()) == {old, new}  # the old release stays registered
    assert registered[_alias("champion") or ""] == new
    assert (
        stacks.cluster.kubectl("-n", "mlops-dev", "get", "job", f"train-{old}", check=False).returncode != 0
    )


def test_a_new_commit_changes_nothing_on_the_cluster(stacks: Stacks) -> None:
    commit = {"MLOPS_GIT_COMMIT": uuid.uuid4().hex + "abcdefgh"}
    stacks.engine.pulumi("preview", "--expect-no-changes", stack="dev", env=commit).check()


@pytest.fixture
def store_unreachable_from_pods(stacks: Stacks) -> Iterator[Any]:
    """Pods' connections to the artifact store are refused (the host's own are not: they come
    from the bridge address too, which is in the pod range, but over loopback); yields the
    function that lifts the outage (idempotent; teardown calls it too)."""
    port = stacks.s3.endpoint_url.rsplit(":", 1)[1]
    cluster = stacks.cluster
    rule = ["INPUT", "!", "-i", "lo", "-s", str(cluster.pod_cidr), "-d", str(cluster.bridge_ip)]
    rule += ["-p", "tcp", "--dport", port]
    rule += ["-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)

    def lift() -> None:
        while subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30).returncode == 0:
            pass

    try:
        yield lift
    finally:
        lift()


def _up_fails_with_the_job(stacks: Stacks) -> str:
    """`pulumi up` of dev, which must fail because the training Job failed (reported at once as
    the Job's backoff limit, not after the provider's timeout); its output."""
    run = stacks.up("dev", check=False)
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0 and "BackoffLimitExceeded" in output, output[-4000:]
    return output


def _new_job(stacks: Stacks) -> str:
    """The release id of the one Job in dev's namespace that is not the served release's."""
    jobs = stacks.cluster.get_json("-n", "mlops-dev", "jobs")["items"]
    names = [j["metadata"]["name"] for j in jobs if j["metadata"]["name"] != f"train-{stacks.releases[-1]}"]
    assert len(names) == 1, names
    return str(names[0]).removeprefix("train-")


def test_a_job_failed_for_a_transient_reason_is_retried_as_documented(
    stacks: Stacks, store_unreachable_from_pods: Any
) -> None:
    cluster = stacks.cluster
    before = _versions(MODEL)
    stacks.set_training(seed=7)
    failed = _up_fails_with_the_job(stacks)
    planned = _new_job(stacks)
    # Store failures are retried in the pod (retries 2: three attempts), then it exits 3 and the
    # Job fails at once, which `pulumi up` reports with the pod's last line.
    pods = _job_pods(cluster, "mlops-dev", planned)
    assert _exit_codes(pods) == [3], [p["status"] for p in pods]
    log = " ".join(cluster.kubectl("-n", "mlops-dev", "logs", f"job/train-{planned}").stdout.split())
    assert "attempt 1 of 3 failed" in log and "attempt 2 of 3 failed" in log, log
    assert "registry error (exit 3)" in failed, failed
    assert _versions(MODEL) == before  # nothing registered
    served = cluster.get_json("-n", "mlops-dev", "deployment", f"{MODEL}-stable")
    assert served["spec"]["template"]["metadata"]["labels"]["mlops.dev/release"] == stacks.releases[-1]

    # The retry from docs/deploy.md, once the store is reachable again.
    store_unreachable_from_pods()
    cluster.kubectl("-n", "mlops-dev", "delete", "job", f"train-{planned}", "--wait=true", timeout=120)
    stacks.up("dev", "--refresh")
    out = stacks.outputs("dev")
    assert out["release_id"] == planned
    stacks.releases.append(planned)
    assert _versions(MODEL)[out["model_version"]] == planned
    assert _served_release(stacks.service_url("mlops-dev"), planned) == planned


def _promote(stacks: Stacks) -> Any:
    """`mlops promote dev prod --yes`, as a user runs it from the project, with each stack's
    store credentials in its own variables."""
    keys = {"ACCESS_KEY_ID": stacks.s3.access_key, "SECRET_ACCESS_KEY": stacks.s3.secret_key}
    env = {f"MLOPS_S3_{key}_{stack}": value for stack in ("DEV", "PROD") for key, value in keys.items()}
    args = ["promote", "dev", "prod", "--yes", "--workdir", str(stacks.engine.project)]
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture
def prod_mlflow(stacks: Stacks, tmp_path: Path) -> Iterator[MlflowService]:
    """Prod's tracking server, outside the cluster (on the host)."""
    service = start_mlflow(tmp_path / "prod-mlflow", stacks.s3)
    yield service
    service.stop()


def test_prod_serves_the_release_dev_proved(stacks: Stacks, prod_mlflow: MlflowService) -> None:
    cluster, engine = stacks.cluster, stacks.engine
    prod_bucket = stacks.s3.make_bucket("prod")
    prod = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    prod.update(
        {
            "mlops:registry": {
                "tracking_uri": prod_mlflow.tracking_uri,
                "artifact_root": f"s3://{prod_bucket}",
            },
            "mlops:kubernetes": {"kubeconfig": str(cluster.kubeconfig_flat)},
            "mlops:images": {**prod["mlops:images"], **{k: cluster.images[k] for k in ("serving", "mlflow")}},
            "mlops:artifacts": {
                "bucket": prod_bucket,
                "create": False,
                "endpoint_url": stacks.s3.endpoint_url,
            },
            "mlops:tracking": {"server_url": prod_mlflow.tracking_uri},
            # Prod's footprint, scaled to one small node: the replicas, spread and budget stay.
            "mlops:serving": {**prod["mlops:serving"], "cpu_request": "100m", "memory_request": "256Mi"},
            "mlops:monitoring": {**prod["mlops:monitoring"], "enabled": False},
        }
    )
    engine.write_stack_config("prod", prod)
    engine.pulumi("stack", "init", "prod").check()
    secrets = {
        "mlops:s3_access_key_id": stacks.s3.access_key,
        "mlops:s3_secret_access_key": stacks.s3.secret_key,
        "mlops:container_registry_password": "unused-here-images-are-local",
    }
    for key, value in secrets.items():
        engine.pulumi("config", "set", "--secret", key, value, stack="prod").check()
    # What dev serves, promoted: copied to prod's bucket, registered in prod's registry, pinned.
    promoted = _promote(stacks)
    assert promoted.exit_code == 0, promoted.output
    pin = read_pin(engine.stack_file("prod"))
    assert pin is not None and pin.release_id == stacks.releases[-1], pin
    assert _versions(MODEL, prod_mlflow.tracking_uri) == {pin.model_version: pin.release_id}
    again = _promote(stacks)
    assert again.exit_code == 0 and "already pins" in again.output, again.output
    stacks.up("prod")

    deployment = cluster.get_json("-n", "mlops-prod", "deployment", f"{MODEL}-stable")
    assert deployment["status"].get("readyReplicas") == 3
    spec = deployment["spec"]["template"]["spec"]
    assert spec["topologySpreadConstraints"] and "@sha256:" in spec["containers"][0]["image"]
    assert cluster.get_json("-n", "mlops-prod", "pdb")["items"], "no PodDisruptionBudget"
    rows = _rows()
    prod_answers, headers = _predict(stacks.service_url("mlops-prod"), rows)
    assert headers["x-mlops-release-id"] == pin.release_id
    assert prod_answers == _predict(stacks.service_url("mlops-dev"), rows)[0]
    assert _alias("champion", prod_mlflow.tracking_uri) == pin.model_version

    engine.pulumi("destroy", "--yes", "--skip-preview", stack="prod", timeout=UP_TIMEOUT).check()
    assert cluster.kubectl("get", "namespace", "mlops-prod", check=False).returncode != 0


def test_a_failing_gate_fails_up_and_leaves_serving_alone(stacks: Stacks) -> None:
    cluster = stacks.cluster
    before, serving = _versions(MODEL), stacks.releases[-1]
    config = stacks.engine.stack_config("dev")
    gates = {**config["mlops:training"]["gates"], "thresholds": {"accuracy": {"min": 0.9999}}}
    stacks.set_training(gates=gates)
    failed = _up_fails_with_the_job(stacks)
    assert "gate failed (exit 5)" in failed and "accuracy" in failed, failed
    rid = _new_job(stacks)
    # Exit 5 fails the Job at once: one pod, no retries.
    assert _exit_codes(_job_pods(cluster, "mlops-dev", rid)) == [5]
    assert _versions(MODEL) == before
    headers = _predict(stacks.service_url("mlops-dev"), _rows(1))[1]
    assert headers["x-mlops-release-id"] == serving
    deployment = cluster.get_json("-n", "mlops-dev", "deployment", f"{MODEL}-stable")
    assert deployment["spec"]["template"]["metadata"]["labels"]["mlops.dev/release"] == serving
    assert _alias("champion") == next(v for v, r in _versions(MODEL).items() if r == serving)


def test_destroy_leaves_nothing_in_the_namespace(stacks: Stacks) -> None:
    cluster = stacks.cluster
    stacks.engine.pulumi("destroy", "--yes", "--skip-preview", stack="dev", timeout=UP_TIMEOUT).check()
    for namespace in ("mlops-dev", "monitoring"):
        assert cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0, namespace
    left = cluster.kubectl("get", "all,configmaps,secrets,pvc", "-n", "mlops-dev", "-o", "name", check=False)
    assert left.stdout.strip() == "", left.stdout
    buckets = {b["Name"] for b in stacks.s3.client().list_buckets()["Buckets"]}
    assert stacks.bucket not in buckets  # force_destroy: the dev bucket went with the stack
