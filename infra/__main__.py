"""The Pulumi program: read the stack's settings, wire the components, export the outputs."""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common import ImageSource, labels, object_name
from components.monitoring import MonitoringImages, MonitoringStack, MonitoringStackArgs
from components.network import Endpoint, NetworkIsolation, NetworkIsolationArgs
from components.providers.model_alias import ModelAlias, ModelAliasArgs
from components.registry import BackendStore, ModelRegistry, ModelRegistryArgs, RegistryMode
from components.retrain_trigger import RetrainTriggerArgs
from components.serving import ModelServing, ModelServingArgs, ServedRelease, ServiceType
from components.training import TrainingJob, TrainingJobArgs
from infra.config import StackSettings, load_settings, project_dir
from infra.release import pinned_release
from model.lineage import git_commit, plan_release


def _secret(value: object) -> pulumi.Output[str] | None:
    from pydantic import SecretStr

    return pulumi.Output.secret(value.get_secret_value()) if isinstance(value, SecretStr) else None


def _image(ref: str | None, dockerfile: str, repository: str, settings: StackSettings) -> ImageSource:
    if ref is not None:
        return ImageSource(ref=ref)
    return ImageSource(
        dockerfile=dockerfile,
        repository=repository,
        tag=settings.images.build_tag,
        platform=settings.images.platform,
    )


def _namespace(settings: StackSettings) -> tuple[pulumi.Output[str], pulumi.ResourceOptions]:
    """The stack's explicit provider and namespace; options that put children in both."""
    kube = settings.kubernetes
    # Rendering needs no cluster, and the real provider refuses a context or kubeconfig beside
    # renderYamlToDirectory: a stack keeps its cluster settings and still renders.
    rendering = settings.renders_only
    provider = k8s.Provider(
        "kubernetes",
        kubeconfig=None if rendering else kube.kubeconfig,
        context=None if rendering else kube.context,
        namespace=settings.namespace,
        render_yaml_to_directory=kube.render_dir,
        enable_server_side_apply=True,
    )
    namespace = k8s.core.v1.Namespace(
        "namespace",
        metadata={
            "name": settings.namespace,
            "labels": {
                **labels("mlops", "registry", settings.stack),
                # Every pod here meets the restricted Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
        opts=pulumi.ResourceOptions(provider=provider),
    )
    return object_name(namespace), pulumi.ResourceOptions(providers={"kubernetes": provider})


def _registry(
    settings: StackSettings, namespace: pulumi.Output[str], opts: pulumi.ResourceOptions
) -> ModelRegistry:
    artifacts = settings.artifacts
    assert artifacts is not None  # validated by StackSettings
    return ModelRegistry(
        "registry",
        ModelRegistryArgs(
            stack=settings.stack,
            namespace=namespace,
            bucket_name=artifacts.bucket,
            create_bucket=artifacts.create,
            bucket_region=artifacts.region,
            s3_endpoint_url=artifacts.endpoint_url,
            s3_cluster_endpoint_url=artifacts.cluster_endpoint_url,
            s3_access_key_id=_secret(settings.s3_access_key_id),
            s3_secret_access_key=_secret(settings.s3_secret_access_key),
            force_destroy_bucket=artifacts.force_destroy,
            bucket_encryption=artifacts.encryption,
            bucket_tls_only=artifacts.enforce_tls,
            protect=settings.protect,
            backend=settings.tracking.backend,
            database_url=_secret(settings.tracking_database_url),
            tracking_storage_size=settings.tracking.storage_size,
            tracking_replicas=settings.tracking.replicas,
            tracking_workers=settings.tracking.workers,
            tracking_node_port=settings.tracking.node_port,
            tracking_server_url=settings.tracking.server_url,
            tracking_allowed_hosts=settings.tracking.server_hosts,
            tracking_cors_origins=settings.tracking.server_origins,
            tracking_auth=settings.tracking_auth,
            tracking_admin_username=settings.tracking.admin_username,
            tracking_admin_password=_secret(settings.tracking_admin_password),
            mlflow_image=_image(settings.images.mlflow, "images/Dockerfile.mlflow", "mlops-mlflow", settings),
            registry_mode=settings.container_registry.mode,
            registry_server=settings.container_registry.server,
            registry_username=settings.container_registry.username,
            registry_password=_secret(settings.container_registry_password),
            registry_node_port=settings.container_registry.node_port,
            registry_storage_size=settings.container_registry.storage_size,
            registry_image=settings.images.registry,
        ),
        opts=opts,
    )


def _training(
    settings: StackSettings,
    namespace: pulumi.Output[str],
    registry: ModelRegistry,
    opts: pulumi.ResourceOptions,
) -> TrainingJob:
    spec, job = settings.training, settings.training_job
    assert spec is not None and settings.artifacts is not None
    # The release id, known at preview: the dataset is read with the stack's own S3 endpoint and
    # credentials, and only when its stored version is not in the project's .mlops/ cache.
    plan = plan_release(spec, settings.dataset_access, project_dir() / ".mlops")
    return TrainingJob(
        "training",
        TrainingJobArgs(
            stack=settings.stack,
            namespace=namespace,
            spec=spec,
            release=plan.inputs,
            image=_image(settings.images.training, "images/Dockerfile.train", "mlops-train", settings),
            push_target=registry.push_target,
            tracking_uri=registry.tracking_uri,
            artifact_root=registry.artifact_root,
            s3_endpoint_url=registry.s3_endpoint_url,
            s3_secret_name=registry.s3_secret_name,
            image_pull_secret_name=registry.image_pull_secret_name,
            tracking_secret_name=registry.tracking_secret_name,
            git_commit=git_commit(),
            retries=job.retries,
            active_deadline_seconds=job.active_deadline_seconds,
            cpu_request=job.cpu_request,
            cpu_limit=job.cpu_limit,
            memory_request=job.memory_request,
            memory_limit=job.memory_limit,
            timeout_minutes=job.timeout_minutes,
            await_completion=not settings.renders_only,
            record_s3_endpoint_url=settings.artifacts.endpoint_url,
            record_access_key_id=_secret(settings.s3_access_key_id),
            record_secret_access_key=_secret(settings.s3_secret_access_key),
        ),
        opts=opts,
    )


def _serving(
    settings: StackSettings,
    namespace: pulumi.Output[str],
    registry: ModelRegistry,
    model_name: str,
    release: ServedRelease,
    opts: pulumi.ResourceOptions,
) -> ModelServing:
    serve = settings.serving
    canary = serve.canary
    return ModelServing(
        "serving",
        ModelServingArgs(
            stack=settings.stack,
            namespace=namespace,
            model_name=model_name,
            release=release,
            image=_image(settings.images.serving, "images/Dockerfile.serve", "mlops-serve", settings),
            push_target=registry.push_target,
            image_pull_secret_name=registry.image_pull_secret_name,
            s3_endpoint_url=registry.s3_endpoint_url,
            s3_secret_name=registry.s3_secret_name,
            canary=pinned_release(canary.release, registry.artifact_root) if canary else None,
            canary_weight=canary.weight if canary else 0,
            replicas=serve.replicas,
            max_replicas=serve.max_replicas,
            target_cpu_percent=serve.target_cpu_percent,
            cpu_request=serve.cpu_request,
            cpu_limit=serve.cpu_limit,
            memory_request=serve.memory_request,
            memory_limit=serve.memory_limit,
            max_request_seconds=serve.max_request_seconds,
            drain_seconds=serve.drain_seconds,
            service_type=ServiceType(serve.service_type),
            topology_spread=serve.topology_spread,
            max_unavailable=serve.max_unavailable,
            monitoring_namespace=settings.monitoring.namespace,
            client_cidrs=serve.client_cidrs,
            min_ready_seconds=serve.min_ready_seconds,
            progress_deadline_seconds=serve.progress_deadline_seconds,
            grpc=serve.grpc,
            workers=serve.workers,
        ),
        opts=opts,
    )


def _network(
    settings: StackSettings, namespace: pulumi.Output[str], model_name: str, opts: pulumi.ResourceOptions
) -> NetworkIsolation:
    """Default deny in the stack's namespace, and the flows its workloads need (docs/network.md)."""
    tracking, artifacts, network = settings.tracking, settings.artifacts, settings.network
    assert artifacts is not None  # validated by StackSettings
    database = None
    if tracking.backend is BackendStore.EXTERNAL and not tracking.server_url:
        url = settings.tracking_database_url.get_secret_value() if settings.tracking_database_url else ""
        # The render holds a placeholder for the secret: then PostgreSQL's port, as documented.
        database = Endpoint.from_url(url if "://" in url else None, default_port=5432)
    return NetworkIsolation(
        "network",
        NetworkIsolationArgs(
            stack=settings.stack,
            namespace=namespace,
            model_name=model_name,
            artifact_store=Endpoint.from_url(artifacts.cluster_endpoint_url or artifacts.endpoint_url),
            training=settings.training is not None,
            tracking_server=Endpoint.from_url(tracking.server_url) if tracking.server_url else None,
            database=database,
            mlflow_node_port=tracking.node_port is not None,
            image_registry=settings.container_registry.mode is RegistryMode.IN_CLUSTER,
            egress_cidrs=network.egress_cidrs,
            node_cidrs=network.node_cidrs,
            tracking_client_namespaces=network.tracking_client_namespaces,
            grpc=settings.serving.grpc,
        ),
        opts=opts,
    )


def _champion(
    settings: StackSettings, model_name: str, release: ServedRelease, serving: ModelServing
) -> ModelAlias | None:
    """The registry alias naming the served version, moved only once the rollout succeeded."""
    alias, tracking_uri = settings.champion_alias, settings.tracking.host_uri
    if alias is None:
        return None
    assert tracking_uri is not None  # load_settings refuses a stack that moves aliases without it
    return ModelAlias(
        "champion",
        ModelAliasArgs(
            tracking_uri=tracking_uri,
            model_name=model_name,
            alias=alias,
            version=release.model_version,
            release_id=release.release_id,
            tracking_username=settings.tracking.admin_username if settings.tracking_auth else None,
            tracking_password=_secret(settings.tracking_admin_password) if settings.tracking_auth else None,
        ),
        opts=pulumi.ResourceOptions(depends_on=[serving]),
    )


def _monitoring(
    settings: StackSettings,
    namespace: pulumi.Output[str],
    registry: ModelRegistry,
    serving: ModelServing,
    opts: pulumi.ResourceOptions,
) -> MonitoringStack | None:
    """Prometheus, the alert rules, Alertmanager, Grafana and the retrain trigger for this stack."""
    monitoring, images = settings.monitoring, settings.images
    if not monitoring.enabled:
        return None
    return MonitoringStack(
        "monitoring",
        MonitoringStackArgs(
            stack=settings.stack,
            namespace=monitoring.namespace,
            serving_namespaces=(namespace,),
            mode=monitoring.mode,
            thresholds=monitoring.thresholds,
            scrape_interval=monitoring.scrape_interval,
            retention=monitoring.retention,
            storage_size=monitoring.storage_size,
            protect=settings.protect,
            images=MonitoringImages(
                prometheus=images.prometheus, alertmanager=images.alertmanager, grafana=images.grafana
            ),
            grafana=monitoring.grafana.enabled,
            grafana_admin_password=_secret(settings.grafana_admin_password),
            retrain=_retrain_trigger(settings, registry, serving),
            operator_labels=monitoring.operator_labels,
        ),
        opts=opts,
    )


def _retrain_trigger(
    settings: StackSettings, registry: ModelRegistry, serving: ModelServing
) -> RetrainTriggerArgs | None:
    retrain = settings.monitoring.retrain
    if not retrain.enabled:
        return None
    assert retrain.repository is not None  # validated by RetrainSettings
    github_token, webhook_token = (
        _secret(settings.retrain_github_token),
        _secret(settings.retrain_webhook_token),
    )
    assert github_token is not None and webhook_token is not None  # load_settings checks both
    return RetrainTriggerArgs(
        # The serving image holds the trigger (python -m model.retrain_trigger): the very image
        # the model servers run, built (dev) once for both. MonitoringStack puts the trigger
        # beside Alertmanager, in its namespace.
        image=ImageSource(ref=serving.image),
        # MonitoringStack makes the pull secret in its namespace from the push target's credentials.
        push_target=registry.push_target,
        stack=settings.stack,
        repository=retrain.repository,
        github_api_url=retrain.github_api_url,
        github_token=github_token,
        webhook_token=webhook_token,
        alert_names=retrain.alert_names,
        min_interval_seconds=retrain.min_interval_seconds,
    )


def _release_to_serve(
    settings: StackSettings,
    namespace: pulumi.Output[str],
    registry: ModelRegistry,
    in_ns: pulumi.ResourceOptions,
) -> tuple[TrainingJob | None, str, ServedRelease, pulumi.ResourceOptions]:
    """The release the stack serves: trained here (dev; serving waits for the Job) or pinned (prod).

    Returns the Job (None when pinned), the model name, the release and the serving options."""
    if settings.training is None:
        assert settings.release is not None  # validated by StackSettings
        return (
            None,
            settings.release.model_name,
            pinned_release(settings.release, registry.artifact_root),
            in_ns,
        )
    training = _training(settings, namespace, registry, in_ns)
    release = ServedRelease(
        release_id=training.release_id,
        model_uri=training.model_uri,
        model_sha256=training.model_sha256,
        model_version=training.model_version,
        gates=training.gates,
    )
    serving_opts = pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(depends_on=[training]))
    return training, settings.training.model_name, release, serving_opts


def _export(
    settings: StackSettings,
    namespace: pulumi.Output[str],
    registry: ModelRegistry,
    training: TrainingJob | None,
    release: ServedRelease,
    serving: ModelServing,
    champion: ModelAlias | None,
    monitoring: MonitoringStack | None,
) -> None:
    """The stack outputs that `mlops status`, the tests and users read."""
    pulumi.export("namespace", namespace)
    pulumi.export("release_id", serving.release_id)
    pulumi.export("model_version", release.model_version)
    pulumi.export("model_uri", serving.model_uri)
    pulumi.export("serving_endpoint", serving.endpoint)
    if serving.grpc_target is not None:
        pulumi.export("serving_grpc_target", serving.grpc_target)
    pulumi.export("tracking_uri", registry.tracking_uri)
    pulumi.export("artifact_root", registry.artifact_root)
    pulumi.export("registry_server", registry.registry_server)
    if champion is not None:
        pulumi.export("champion", {"alias": settings.champion_alias, "version": champion.version})
    if monitoring is not None:
        urls = {"prometheus": monitoring.prometheus_url, "grafana": monitoring.grafana_url}
        pulumi.export(
            "monitoring", {"namespace": monitoring.namespace, **{k: v for k, v in urls.items() if v}}
        )
    pulumi.export(
        "images",
        {
            "serving": serving.image,
            **({"mlflow": registry.mlflow_image} if registry.mlflow_image is not None else {}),
            **({"training": training.image} if training is not None else {}),
        },
    )


def main() -> None:
    settings = load_settings()
    namespace, in_ns = _namespace(settings)
    registry = _registry(settings, namespace, in_ns)
    training, model_name, release, serving_opts = _release_to_serve(settings, namespace, registry, in_ns)
    _network(settings, namespace, model_name, in_ns)
    serving = _serving(settings, namespace, registry, model_name, release, serving_opts)
    champion = _champion(settings, model_name, release, serving)
    monitoring = _monitoring(settings, namespace, registry, serving, in_ns)
    _export(settings, namespace, registry, training, release, serving, champion, monitoring)


main()
