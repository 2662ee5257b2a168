"""The `mlops` command line: parses, calls, prints. The work lives in model/ and infra/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from infra.config import StackSettings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Train, gate, register and ship model releases."
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack name: reads Pulumi.<stack>.yaml.")]
WorkdirOption = Annotated[
    Path, typer.Option(help="Project folder (holds Pulumi.yaml and the embedded registry .mlops/).")
]


def _settings(stack: str, workdir: Path) -> StackSettings:
    from infra.config import ConfigError, load_stack_file

    try:
        return load_stack_file(stack, workdir)
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def release(
    stack: StackOption = "dev",
    workdir: WorkdirOption = Path("."),
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Run one release of a stack locally: train, gate, register (embedded MLflow unless configured)."""
    from model.errors import ExitCode
    from model.train import describe_failure, train_release

    settings = _settings(stack, workdir)
    if settings.training is None:
        err.print(f"[red]error:[/] stack {stack!r} has no mlops:training spec; it serves a pinned release")
        raise typer.Exit(2)
    registry = settings.registry
    where = registry.tracking_uri or "embedded MLflow (SQLite under .mlops/)"
    err.print(f"[bold]release[/] of stack {stack!r} into {where}")
    try:
        outcome = train_release(settings.training, registry, workdir, log=lambda m: err.print(f"  {m}"))
    except Exception as exc:
        code, line = describe_failure(exc)
        if code is ExitCode.CRASHED:
            err.print_exception()
        err.print(line, style="red", markup=False)
        raise typer.Exit(int(code)) from None
    if json_out:
        out.print_json(json.dumps(outcome.as_dict()))
        return
    table = Table(title=f"release {outcome.release_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("status", outcome.status)
    table.add_row("model", f"{outcome.model_name} version {outcome.version}")
    table.add_row("model URI", outcome.model_uri)
    table.add_row("dataset sha256", outcome.dataset_hash)
    table.add_row("code sha256", outcome.code_hash)
    table.add_row("runtime", ", ".join(f"{k} {v}" for k, v in outcome.runtime.items()))
    for name, value in sorted(outcome.metrics.items()):
        table.add_row(name, f"{value:.4f}")
    table.add_row("gates", "passed" if outcome.gates.get("passed") else "failed")
    if "champion" in outcome.gates:
        table.add_row("champion compared", str(outcome.gates["champion"]))
    out.print(table)


@app.command("release-id")
def release_id_command(stack: StackOption = "dev", workdir: WorkdirOption = Path(".")) -> None:
    """Print the release id a stack's training spec resolves to, without training."""
    from infra.config import project_dir
    from model.errors import BadConfig, RegistryError
    from model.lineage import plan_release

    settings = _settings(stack, workdir)
    if settings.training is None:
        err.print(f"[red]error:[/] stack {stack!r} has no mlops:training spec")
        raise typer.Exit(2)
    try:
        plan = plan_release(settings.training, settings.dataset_access, project_dir(workdir) / ".mlops")
    except (BadConfig, RegistryError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    out.print(plan.release_id)


@app.command()
def render(
    stack: StackOption = "dev",
    workdir: WorkdirOption = Path("."),
    out: Annotated[Path | None, typer.Option(help="Output folder (default .mlops/render/<stack>).")] = None,
    check: Annotated[bool, typer.Option(help="Also run the schema and policy checks.")] = True,
) -> None:
    """Write a stack's desired state (every resource, every Kubernetes object) as YAML, credential-free."""
    from infra.config import ConfigError, project_dir
    from infra.render import render_stack

    try:
        result = render_stack(stack, out, project_dir(workdir))
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from None
    objects = result.kubernetes_objects
    err.print(
        f"rendered {len(result.resources)} resources ({len(objects)} Kubernetes objects) to {result.out_dir}"
    )
    if not check:
        return
    import kubernetes_validate

    from policy.rules import check_resources, stack_pack_config

    version = kubernetes_validate.latest_version()
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"schema: {obj['kind']} {obj['metadata'].get('name')}: {exc.message}")
    config = stack_pack_config(stack)
    problems += [v.message for v in check_resources(result.policy_resources(), config)]
    for problem in problems:
        err.print(f"[red]x[/] {problem}")
    if problems:
        raise typer.Exit(1)
    err.print(f"[green]ok[/] {len(objects)} objects pass the Kubernetes {version} schemas and policy pack")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Serve a release over HTTP: the serving image's server (see `mlops serve --help`)."""
    # Imported here: the server pins thread pools at import, which training must not inherit.
    from model.server.__main__ import app as server_app

    server_app(args=ctx.args, prog_name="mlops serve")


if __name__ == "__main__":
    app()
