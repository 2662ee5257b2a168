"""The `mlops` command line: parses, calls, prints. The work lives in model/ and infra/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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


class _UsageErrorExitsOne(typer.core.TyperCommand):
    """`mlops diff` exits 2 for "changes", so its usage errors must exit 1, like any other error."""

    # Unannotated: typer's own (vendored click) context and arguments, passed through unchanged.
    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            exc.exit_code = 1
            raise


@app.command(cls=_UsageErrorExitsOne)
def diff(
    stack: StackOption = "dev",
    workdir: WorkdirOption = Path("."),
    against: Annotated[
        str | None,
        typer.Option(
            help="A git revision, or a folder written by `mlops render --out` "
            "(default: the merge base of HEAD with origin/main, else main)."
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
) -> None:
    """What a change does to a stack's desired state. Exit 0: no changes, 2: changes, 1: error."""
    from infra.config import ConfigError, project_dir
    from infra.diff import DiffError
    from infra.diff_output import OutputFormat, render_as, to_text
    from infra.diff_sources import diff_stack

    formats = [f.value for f in OutputFormat]
    if output_format not in formats:
        err.print(f"error: --format must be one of {', '.join(formats)} (got {output_format!r})", style="red")
        raise typer.Exit(1)
    try:
        plan = diff_stack(stack, against, project_dir(workdir))
    except (ConfigError, DiffError) as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if output_format == OutputFormat.text:
        out.print(to_text(plan))
    else:
        typer.echo(render_as(plan, OutputFormat(output_format)), nl=False)
    raise typer.Exit(2 if plan.has_changes else 0)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Serve a release over HTTP: the serving image's server (see `mlops serve --help`)."""
    # Imported here: the server pins thread pools at import, which training must not inherit.
    from model.server.__main__ import app as server_app

    server_app(args=ctx.args, prog_name="mlops serve")


@app.command(cls=_UsageErrorExitsOne)
def drift(
    model_uri: Annotated[
        str, typer.Option("--model-uri", help="Release folder: a path, s3://..., models:/<name>/<version>.")
    ],
    data: Annotated[
        str, typer.Option("--data", help="Dataset: a .csv or .parquet path, s3://... or sklearn:<name>.")
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write index.html and a PNG per drifted feature here.")
    ] = None,
    psi_threshold: Annotated[
        float | None, typer.Option("--psi-threshold", help="PSI above this is drift [default 0.2].")
    ] = None,
    ks_threshold: Annotated[
        float | None, typer.Option("--ks-threshold", help="KS above this is drift [default 0.1].")
    ] = None,
) -> None:
    """A dataset against a release's training profile: PSI and KS per feature and of the predictions.
    Exit 0: no drift, 2: drift, 1: error."""
    from infra.drift_report import ReportError, run_drift, write_report

    try:
        run = run_drift(model_uri, data, psi_threshold, ks_threshold)
        written = write_report(run, out_dir) if out_dir is not None else []
    except ReportError as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    report = run.report
    table = Table(title=f"drift of {data} against release {run.release_id} ({report.rows} rows)")
    for column in ("feature", "PSI", "KS", "drifted"):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for d in report.distributions:
        ks = "n/a" if d.ks is None else f"{d.ks:.4f}"
        table.add_row(d.name, f"{d.psi:.4f}", ks, "[red]yes[/]" if report.is_drifted(d) else "no")
    out.print(table)
    drifted = [d.name for d in report.distributions if report.is_drifted(d)]
    verdict = f"drift in {', '.join(drifted)}" if drifted else "no drift"
    thresholds = f"thresholds: PSI > {report.psi_threshold}, KS > {report.ks_threshold}"
    out.print(f"{thresholds}; {verdict}", markup=False)
    if written:
        err.print(f"wrote {written[0]} and {len(written) - 1} image(s)", markup=False, soft_wrap=True)
    raise typer.Exit(2 if report.drifted else 0)


ReleaseOption = Annotated[
    str | None, typer.Option("--release", help="Release id; it must be what the source stack serves.")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Check everything, write nothing.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask before writing the pin.")]


def _step_failed(exc: Exception) -> typer.Exit:
    from infra.promotion import PromotionError

    where = f"at step '{exc.step}'" if isinstance(exc, PromotionError) else "before any change"
    err.print(f"failed {where}: {exc}", style="red", markup=False, soft_wrap=True)
    err.print("nothing after that step was written; the stack file is untouched. Run it again once fixed.")
    return typer.Exit(1)


def _apply_plan(plan: Any, root: Path, dry_run: bool, yes: bool) -> None:
    """Show a promotion or rollback, then run it (or, with --dry-run, only check it)."""
    from infra.promotion import dry_run as check_only
    from infra.promotion import execute

    target = plan.target
    err.print(
        f"[bold]{plan.kind}[/] release [bold]{plan.release_id}[/] of {target.model_name} "
        f"(version {plan.source_version} in {plan.source.stack}, gates passed, model "
        f"sha256 {plan.metadata.model_sha256[:12]} verified) into stack [bold]{target.stack}[/]"
    )
    if plan.already_pinned:
        err.print(f"{target.stack} already pins release {plan.release_id}: nothing to do")
        return
    log = lambda m: err.print(f"  {m}", markup=False)  # noqa: E731
    if dry_run:
        check_only(plan, log)
        err.print("dry run: every check passed, nothing was written")
        return
    if not yes and not typer.confirm(f"write the pin into {target.stack_file.name}?", err=True):
        raise typer.Exit(1)
    before = _render_or_none(target.stack, root)
    execute(plan, log)
    _print_stack_diff(target.stack, root, before)


def _run_plan(workdir: Path, make_plan: Callable[[Path], Any], dry_run: bool, yes: bool) -> None:
    """Plan in the project at `workdir`, then run it; a config or step failure is one clear line."""
    from infra.config import ConfigError, project_dir
    from infra.promotion import PromotionError

    try:
        root = project_dir(workdir)
        _apply_plan(make_plan(root), root, dry_run, yes)
    except (PromotionError, ConfigError) as exc:
        raise _step_failed(exc) from None


def _render_or_none(stack: str, root: Path) -> Any:
    from infra.render import run_program

    try:
        return run_program(stack, root)
    except Exception as exc:  # the diff is a courtesy: the promotion itself does not need it
        err.print(f"(no diff: rendering {stack} failed: {exc})", markup=False)
        return None


def _print_stack_diff(stack: str, root: Path, before: Any) -> None:
    after = _render_or_none(stack, root)
    if before is None or after is None:
        return
    from infra.diff import diff_renders
    from infra.diff_output import to_text

    out.print(to_text(diff_renders(before, after)))


@app.command()
def promote(
    source: Annotated[str, typer.Argument(help="The stack that proved the release, e.g. dev.")],
    target: Annotated[str, typer.Argument(help="The stack that will serve it, e.g. prod.")],
    release: ReleaseOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """Pin the release SOURCE serves into TARGET: copy, register, record, write Pulumi.<TARGET>.yaml."""
    from infra.promotion import place_of, plan_promotion

    _run_plan(
        workdir,
        lambda root: plan_promotion(place_of(source, root), place_of(target, root), release),
        dry_run,
        yes,
    )


@app.command()
def rollback(
    stack: Annotated[str, typer.Argument(help="The stack to roll back, e.g. prod.")],
    to: Annotated[str | None, typer.Option("--to", help="A release from the stack's history.")] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """Pin the release STACK served before (or --to one from its history), through promote's checks."""
    from infra.promotion import place_of, plan_rollback

    _run_plan(workdir, lambda root: plan_rollback(place_of(stack, root), to), dry_run, yes)


@app.command("delete-version")
def delete_version_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The stack whose registry holds the version.")],
    version: Annotated[str, typer.Option("--version", help="The model version number.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before deleting.")] = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """Delete a model version from a stack's registry; refused while an alias or a stack file
    points at it. The release folder is kept. Exit 1: refused or absent, 2: config, 3: registry."""
    from infra.config import ConfigError, project_dir
    from infra.versions import VersionInUse, VersionNotFound, delete_version, plan_deletion
    from model.errors import RegistryError

    try:
        root = project_dir(workdir)
        deletion = plan_deletion(stack, version, root)
        where = f"{deletion.model_name} version {version} (release {deletion.release_id})"
        where += f" at {deletion.tracking_uri}"
        if not yes and not typer.confirm(f"delete {where}?", err=True):
            raise typer.Exit(1)
        delete_version(deletion, root)
    except (VersionInUse, VersionNotFound) as exc:
        err.print(f"error: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(f"config error: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except RegistryError as exc:
        err.print(f"registry error: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    err.print(f"deleted {where}; its artifacts are kept at {deletion.source}", markup=False, soft_wrap=True)


@app.command()
def status(
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="One stack (default: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """Per stack: the release it serves, its version, gates, lineage, aliases and recent history."""
    from infra.config import ConfigError, project_dir
    from infra.status import stack_status, stacks_in

    try:
        root = project_dir(workdir)
        statuses = [stack_status(name, root) for name in ([stack] if stack else stacks_in(root))]
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from None
    if json_out:
        out.print_json(json.dumps([s.as_dict() for s in statuses]))
        return
    for s in statuses:
        table = Table(title=f"{s.stack} ({s.mode})", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("release", f"{s.release_id or '-'} ({s.model_name} version {s.model_version or '-'})")
        table.add_row("gates", s.gates or "-")
        for key, value in s.lineage.items():
            table.add_row(key, str(value))
        table.add_row("aliases", ", ".join(f"{a} -> {v}" for a, v in s.aliases.items()) or "-")
        for event in s.history[-3:]:
            table.add_row(
                event.kind, f"{event.release_id} v{event.model_version} at {event.at} by {event.by}"
            )
        for problem in s.problems:
            table.add_row("[red]unreachable[/]", problem)
        out.print(table)


@app.command()
def history(
    stack: Annotated[str, typer.Argument(help="The stack, e.g. prod.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """The stack's deployment history (promotions and rollbacks), oldest first."""
    from dataclasses import asdict

    from infra.config import ConfigError, project_dir
    from infra.history import read_history
    from infra.promotion import place_of
    from model.errors import RegistryError

    try:
        place = place_of(stack, project_dir(workdir))
        events = read_history(place.artifact_root, place.model_name, place.s3)
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from None
    except RegistryError as exc:
        err.print(f"[red]registry error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    if json_out:
        out.print_json(json.dumps([asdict(e) for e in events]))
        return
    table = Table(title=f"deployment history of {stack}")
    for column in ("at (UTC)", "event", "release", "version", "from", "by"):
        table.add_column(column)
    for e in events:
        table.add_row(e.at, e.kind, e.release_id, e.model_version, e.source, e.by)
    out.print(table)


@app.command("retrain-bump")
def retrain_bump(
    event: Annotated[
        Path | None,
        typer.Option(envvar="GITHUB_EVENT_PATH", help="The repository_dispatch event file (JSON)."),
    ] = None,
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="Must be the alert's stack.")] = None,
    dry_run: DryRunOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    workdir: WorkdirOption = Path("."),
) -> None:
    """After a drift alert: point the stack's training dataset at the newest version under its prefix."""
    from infra.config import ConfigError, project_dir
    from infra.retrain import bump_from_event
    from model.errors import BadConfig, RegistryError

    if event is None:
        err.print("[red]error:[/] pass --event FILE (GitHub Actions sets GITHUB_EVENT_PATH)")
        raise typer.Exit(2)
    try:
        result = bump_from_event(event, project_dir(workdir), stack, dry_run)
    except ConfigError as exc:
        err.print(f"error: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (BadConfig, RegistryError) as exc:
        err.print(f"error: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    err.print(result.message, markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.as_dict()))
    elif result.changed:
        out.print(f"branch: {result.branch}\ntitle: {result.title}\n\n{result.body()}", markup=False)


if __name__ == "__main__":
    app()
