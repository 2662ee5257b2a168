"""ModelRegistry under Pulumi's mocks: tree, names, parents, type token, outputs, validation."""

from __future__ import annotations

import json

import pulumi
import pytest

from components.common import ImageSource
from components.registry import BackendStore, ModelRegistry, ModelRegistryArgs, RegistryMode

TOKEN = "mlops:index:ModelRegistry"
BUILT = ImageSource(dockerfile="images/Dockerfile.mlflow", repository="mlops-mlflow")
PINNED = "ghcr.io/acme/mlops-mlflow@sha256:" + "a" * 64


def _dev_args(**overrides: object) -> ModelRegistryArgs:
    values: dict[str, object] = {
        "stack": "dev",
        "namespace": "ns-dev",
        "bucket_name": "bucket-dev",
        "mlflow_image": BUILT,
        "s3_endpoint_url": "http://localhost:9000",
        "s3_cluster_endpoint_url": "http://minio:9000",
        "s3_access_key_id": pulumi.Output.secret("AKIA-TEST"),
        "s3_secret_access_key": pulumi.Output.secret("very-secret"),
    }
    values.update(overrides)
    return ModelRegistryArgs(**values)  # type: ignore[arg-type]


def test_dev_registry_tree_and_outputs(pulumi_mocks, unique) -> None:
    name = unique("reg")
    registry = pulumi_mocks.build(lambda: ModelRegistry(name, _dev_args()))

    assert registry.pulumi_resource_type == TOKEN
    children = pulumi_mocks.children_of(TOKEN, name)
    assert sorted((c.type, c.name) for c in children) == sorted(
        [
            ("pulumi-python:dynamic:Resource", f"{name}-bucket"),
            ("kubernetes:core/v1:Secret", f"{name}-s3-credentials"),
            ("kubernetes:core/v1:PersistentVolumeClaim", f"{name}-image-registry-data"),
            ("kubernetes:apps/v1:Deployment", f"{name}-image-registry"),
            ("kubernetes:core/v1:Service", f"{name}-image-registry"),
            ("docker:index/image:Image", f"{name}-mlflow-image"),
            ("kubernetes:core/v1:PersistentVolumeClaim", f"{name}-mlflow-data"),
            ("kubernetes:apps/v1:Deployment", f"{name}-mlflow"),
            ("kubernetes:core/v1:Service", f"{name}-mlflow"),
        ]
    )
    assert all(c.name.startswith(f"{name}-") for c in children)

    outputs = pulumi_mocks.value(
        pulumi.Output.all(
            registry.tracking_uri,
            registry.artifact_root,
            registry.registry_server,
            registry.mlflow_image,
            registry.s3_secret_name,
        )
    )
    assert outputs[0] == "http://mlflow.ns-dev.svc.cluster.local:5000"
    assert outputs[1] == "s3://bucket-dev"
    assert outputs[2] == "localhost:30500"
    assert outputs[3].startswith("localhost:30500/mlops-mlflow@sha256:")
    assert outputs[4] == f"{name}-s3-credentials"
    assert registry.image_pull_secret_name is None

    # The bucket: versioned, public access blocked, credentials secret.
    bucket = pulumi_mocks.one("pulumi-python:dynamic:Resource", f"{name}-bucket").inputs
    assert bucket["bucket_name"] == "bucket-dev"
    assert bucket["versioning"] is True and bucket["block_public_access"] is True
    assert bucket["access_key_id"] == "[secret]" and bucket["secret_access_key"] == "[secret]"

    # SQLite: one replica, Recreate, the PVC mounted; artifacts go straight to S3.
    mlflow = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-mlflow").inputs
    assert mlflow["spec"]["replicas"] == 1
    assert mlflow["spec"]["strategy"] == {"type": "Recreate"}
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--backend-store-uri=sqlite:////data/mlflow.db" in container["args"]
    assert "--default-artifact-root=s3://bucket-dev/_runs" in container["args"]
    volumes = mlflow["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "mlflow-data"}} in volumes
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-s3-credentials"

    # Image built from the repo and pushed to the in-cluster registry, after it exists.
    image = pulumi_mocks.one("docker:index/image:Image", f"{name}-mlflow-image").inputs
    assert image["imageName"] == "localhost:30500/mlops-mlflow:latest"
    assert image["build"]["dockerfile"].endswith("images/Dockerfile.mlflow")
    assert image["registry"]["server"] == "localhost:30500"
    assert image["skipPush"] is False

    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-image-registry").inputs
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 30500
    secret = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-s3-credentials").inputs
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "[secret]", "AWS_SECRET_ACCESS_KEY": "[secret]"}


def test_prod_registry_external_everything(pulumi_mocks, unique) -> None:
    name = unique("reg")
    args = _dev_args(
        stack="prod",
        create_bucket=False,
        mlflow_image=ImageSource(ref=PINNED),
        s3_endpoint_url=None,
        s3_cluster_endpoint_url=None,
        s3_access_key_id=None,
        s3_secret_access_key=None,
        backend=BackendStore.EXTERNAL,
        database_url=pulumi.Output.secret("postgresql://u:p@db/mlflow"),
        tracking_replicas=2,
        registry_mode=RegistryMode.EXTERNAL,
        registry_server="ghcr.io/acme",
        registry_username="bot",
        registry_password=pulumi.Output.secret("token"),
    )
    registry = pulumi_mocks.build(lambda: ModelRegistry(name, args))
    types = sorted(c.type for c in pulumi_mocks.children_of(TOKEN, name))
    # No bucket, no registry Deployment, no image build, no PVC.
    assert types == sorted(
        [
            "kubernetes:core/v1:Secret",  # pull secret
            "kubernetes:core/v1:Secret",  # database URL
            "kubernetes:apps/v1:Deployment",
            "kubernetes:policy/v1:PodDisruptionBudget",  # two replicas: a drain keeps one
            "kubernetes:core/v1:Service",
        ]
    )
    values = pulumi_mocks.value(
        pulumi.Output.all(
            registry.artifact_root,
            registry.registry_server,
            registry.mlflow_image,
            registry.image_pull_secret_name,
        )
    )
    assert values == ["s3://bucket-dev", "ghcr.io/acme", PINNED, f"{name}-pull-secret"]
    assert registry.s3_endpoint_url is None and registry.s3_secret_name is None

    mlflow = pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-mlflow").inputs
    assert mlflow["spec"]["replicas"] == 2
    assert mlflow["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    db = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-mlflow-database").inputs
    assert db["stringData"] == {"MLFLOW_BACKEND_STORE_URI": "[secret]"}
    pull = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-pull-secret")
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert pull.inputs["stringData"] == {".dockerconfigjson": "[secret]"}
    # The secret stays a secret Output end to end.
    assert pulumi_mocks.value(registry.push_target.password.is_secret()) is True


def test_an_external_tracking_server_deploys_no_mlflow(pulumi_mocks, unique) -> None:
    name = unique("reg")
    server = "https://mlflow.example.internal"
    args = _dev_args(create_bucket=False, tracking_server_url=server, backend=BackendStore.EXTERNAL)
    registry = pulumi_mocks.build(lambda: ModelRegistry(name, args))
    names = {c.name for c in pulumi_mocks.children_of(TOKEN, name)}
    assert not {n for n in names if "mlflow" in n}, names
    assert registry.mlflow_image is None
    assert pulumi_mocks.value(registry.tracking_uri) == server


def test_mlflow_on_a_node_port_for_the_host(pulumi_mocks, unique) -> None:
    name = unique("reg")
    pulumi_mocks.build(lambda: ModelRegistry(name, _dev_args(tracking_node_port=30550)))
    service = pulumi_mocks.one("kubernetes:core/v1:Service", f"{name}-mlflow").inputs["spec"]
    assert service["type"] == "NodePort" and service["ports"][0]["nodePort"] == 30550


def test_docker_config_names_the_registry_host() -> None:
    from components.common import docker_config

    config = json.loads(docker_config("ghcr.io/acme", "bot", "token"))
    assert config["auths"]["ghcr.io"]["auth"] == "Ym90OnRva2Vu"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tracking_replicas": 2}, "tracking_replicas must be 1 with backend sqlite, got 2"),
        ({"backend": BackendStore.EXTERNAL}, "database_url is required with backend external"),
        ({"registry_mode": RegistryMode.EXTERNAL}, "registry_server is required with registry_mode external"),
        ({"registry_node_port": 8080}, "registry_node_port must be in 30000..32767, got 8080"),
        ({"backend": "postgres"}, "backend must be one of ['sqlite', 'external'], got 'postgres'"),
        ({"s3_secret_access_key": None}, "must be given together"),
        ({"tracking_node_port": 80}, "tracking_node_port must be in 30000..32767, got 80"),
        (
            {"tracking_node_port": 30550, "tracking_server_url": "https://m"},
            "tracking_node_port (30550) exposes an in-cluster MLflow; there is none with",
        ),
    ],
)
def test_invalid_args_name_the_argument(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        _dev_args(**overrides)
    assert message in str(err.value)


def _mlflow_template(pulumi_mocks, name: str):
    return pulumi_mocks.one("kubernetes:apps/v1:Deployment", f"{name}-mlflow").inputs["spec"]["template"]


def test_mlflow_runs_the_arguments_the_security_tests_start(pulumi_mocks, unique) -> None:
    from components.registry import mlflow_server_args, service_hosts

    name = unique("reg")
    pulumi_mocks.build(lambda: ModelRegistry(name, _dev_args()))
    template = _mlflow_template(pulumi_mocks, name)
    container = template["spec"]["containers"][0]
    assert container["args"] == mlflow_server_args(
        backend_store_uri="sqlite:////data/mlflow.db",
        artifacts="s3://bucket-dev/_runs",
        allowed_hosts=service_hosts("ns-dev"),
    )
    hosts = next(a for a in container["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1]
    names = ("mlflow", "mlflow.ns-dev", "mlflow.ns-dev.svc", "mlflow.ns-dev.svc.cluster.local")
    expected = [p for host in (*names, "localhost", "127.0.0.1") for p in (host, f"{host}:*")]
    assert hosts.split(",") == expected  # exact names: no `mlflow.*`
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert not [k for k in env if k.startswith(("MLFLOW_SERVER_DISABLE", "MLFLOW_AUTH"))]
    assert "--app-name=basic-auth" not in container["args"]


def test_an_authenticated_mlflow_and_its_clients_credentials(pulumi_mocks, unique) -> None:
    name = unique("reg")
    args = _dev_args(
        tracking_auth=True,
        tracking_admin_password=pulumi.Output.secret("a-long-admin-password"),
        tracking_allowed_hosts=("mlflow.example.internal",),
        tracking_cors_origins=("https://mlflow.example.internal",),
    )
    registry = pulumi_mocks.build(lambda: ModelRegistry(name, args))
    template = _mlflow_template(pulumi_mocks, name)
    container = template["spec"]["containers"][0]
    assert "--app-name=basic-auth" in container["args"]
    assert "--cors-allowed-origins=https://mlflow.example.internal" in container["args"]
    assert "mlflow.example.internal:*" in next(a for a in container["args"] if a.startswith("--allowed"))
    auth = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-mlflow-auth").inputs
    assert auth["stringData"] == dict.fromkeys(
        ("basic_auth.ini", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"), "[secret]"
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-mlflow-auth", "key": key}
    assert {"name": "auth", "mountPath": "/etc/mlflow-auth", "readOnly": True} in container["volumeMounts"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "auth"]
    assert volume["secret"]["items"] == [{"key": "basic_auth.ini", "path": "basic_auth.ini"}]
    client = pulumi_mocks.one("kubernetes:core/v1:Secret", f"{name}-mlflow-client").inputs
    assert set(client["stringData"]) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert pulumi_mocks.value(registry.tracking_secret_name) == f"{name}-mlflow-client"


def test_the_auth_config_keeps_what_it_is_given() -> None:
    import configparser

    from components.registry import auth_secret_data

    url = "postgresql://mlflow:p%40ss%25@db/mlflow"
    data = auth_secret_data("admin", "a-long-admin-password", url)
    config = configparser.ConfigParser()
    config.read_string(data["basic_auth.ini"])
    assert config["mlflow"]["database_uri"] == url and config["mlflow"]["admin_username"] == "admin"
    assert "a-long-admin-password" not in data["basic_auth.ini"]  # the password goes in the env
    other = auth_secret_data("admin", "another-password", url)
    assert data["MLFLOW_FLASK_SERVER_SECRET_KEY"] != other["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    with pytest.raises(ValueError, match="admin_username must be one non-empty line"):
        auth_secret_data("admin\ndefault_permission = MANAGE", "a-long-admin-password", url)
    with pytest.raises(ValueError, match="tracking_admin_password is required with tracking_auth"):
        _dev_args(tracking_auth=True)
