"""The Pulumi program: read the stack's settings, wire the components, export the outputs."""

# pulumi-kubernetes types object arguments as TypedDict overloads that dict literals holding
# Outputs do not match for mypy; the dicts here are checked against the Kubernetes schemas by
# tests/components instead.
# mypy: disable-error-code="call-overload"

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common import ImageSource, labels, object_name
from components.registry import ModelRegistry, ModelRegistryArgs
from components.serving import ModelServing, ModelServingArgs, ServedRelease, ServiceType
from components.training import TrainingJob, TrainingJobArgs
from infra.config import StackSettings, load_settings
from infra.release import pinned_release
from model.lineage import git_commit
from model.train import plan_release


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


def main() -> None:
    settings = load_settings()
    stack, ns = settings.stack, settings.namespace
    kube = settings.kubernetes
    # Rendering needs no cluster, and the real provider refuses a context or kubeconfig beside
    # renderYamlToDirectory: a stack keeps its cluster settings and still renders.
    rendering = settings.renders_only
    provider = k8s.Provider(
        "kubernetes",
        kubeconfig=None if rendering else kube.kubeconfig,
        context=None if rendering else kube.context,
        namespace=ns,
        render_yaml_to_directory=kube.render_dir,
        enable_server_side_apply=True,
    )
    namespace = k8s.core.v1.Namespace(
        "namespace",
        metadata={
            "name": ns,
            "labels": {
                **labels("mlops", "registry", stack),
                # Every pod here meets the restricted Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
        opts=pulumi.ResourceOptions(provider=provider),
    )
    in_ns = pulumi.ResourceOptions(providers={"kubernetes": provider})
    namespace_name = object_name(namespace)

    artifacts = settings.artifacts
    assert artifacts is not None  # validated by StackSettings
    access_key, secret_key = _secret(settings.s3_access_key_id), _secret(settings.s3_secret_access_key)
    registry = ModelRegistry(
        "registry",
        ModelRegistryArgs(
            stack=stack,
            namespace=namespace_name,
            bucket_name=artifacts.bucket,
            create_bucket=artifacts.create,
            bucket_region=artifacts.region,
            s3_endpoint_url=artifacts.endpoint_url,
            s3_cluster_endpoint_url=artifacts.cluster_endpoint_url,
            s3_access_key_id=access_key,
            s3_secret_access_key=secret_key,
            force_destroy_bucket=artifacts.force_destroy,
            backend=settings.tracking.backend,
            database_url=_secret(settings.tracking_database_url),
            tracking_storage_size=settings.tracking.storage_size,
            tracking_replicas=settings.tracking.replicas,
            mlflow_image=_image(settings.images.mlflow, "images/Dockerfile.mlflow", "mlops-mlflow", settings),
            registry_mode=settings.container_registry.mode,
            registry_server=settings.container_registry.server,
            registry_username=settings.container_registry.username,
            registry_password=_secret(settings.container_registry_password),
            registry_node_port=settings.container_registry.node_port,
            registry_storage_size=settings.container_registry.storage_size,
            registry_image=settings.images.registry,
        ),
        opts=in_ns,
    )

    training_image: pulumi.Output[str] | None = None
    if settings.training is not None:
        spec, job = settings.training, settings.training_job
        plan = plan_release(spec)  # the release id, known at preview
        training = TrainingJob(
            "training",
            TrainingJobArgs(
                stack=stack,
                namespace=namespace_name,
                spec=spec,
                release_id=plan.release_id,
                image=_image(settings.images.training, "images/Dockerfile.train", "mlops-train", settings),
                push_target=registry.push_target,
                tracking_uri=registry.tracking_uri,
                artifact_root=registry.artifact_root,
                s3_endpoint_url=registry.s3_endpoint_url,
                s3_secret_name=registry.s3_secret_name,
                image_pull_secret_name=registry.image_pull_secret_name,
                git_commit=git_commit(),
                backoff_limit=job.backoff_limit,
                active_deadline_seconds=job.active_deadline_seconds,
                cpu_request=job.cpu_request,
                cpu_limit=job.cpu_limit,
                memory_request=job.memory_request,
                memory_limit=job.memory_limit,
                timeout_minutes=job.timeout_minutes,
                await_completion=not settings.renders_only,
                record_s3_endpoint_url=artifacts.endpoint_url,
                record_access_key_id=access_key,
                record_secret_access_key=secret_key,
                record_tracking_uri=settings.tracking.host_tracking_uri,
            ),
            opts=in_ns,
        )
        model_name = spec.model_name
        release = ServedRelease(
            release_id=training.release_id,
            model_uri=training.model_uri,
            model_sha256=training.model_sha256,
            model_version=training.model_version,
            gates=training.gates,
        )
        training_image = training.image
        serving_opts = pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(depends_on=[training]))
    else:
        assert settings.release is not None  # validated by StackSettings
        model_name = settings.release.model_name
        release = pinned_release(settings.release, registry.artifact_root)
        serving_opts = in_ns

    serve = settings.serving
    canary = serve.canary
    serving = ModelServing(
        "serving",
        ModelServingArgs(
            stack=stack,
            namespace=namespace_name,
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
            monitoring_namespace=serve.monitoring_namespace,
        ),
        opts=serving_opts,
    )

    pulumi.export("namespace", namespace_name)
    pulumi.export("release_id", serving.release_id)
    pulumi.export("model_uri", serving.model_uri)
    pulumi.export("serving_endpoint", serving.endpoint)
    pulumi.export("tracking_uri", registry.tracking_uri)
    pulumi.export("artifact_root", registry.artifact_root)
    pulumi.export("registry_server", registry.registry_server)
    pulumi.export(
        "images",
        {
            "serving": serving.image,
            "mlflow": registry.mlflow_image,
            **({"training": training_image} if training_image is not None else {}),
        },
    )


main()
