"""How `mlops diff` shows a plan: rich text for a terminal, markdown for a pull-request comment
(stable ordering, no timestamps: a re-run gives the same comment), JSON for machines."""

from __future__ import annotations

import difflib
import html
import json
from dataclasses import asdict
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from infra.diff import ACTIONS, PlanDiff, PropertyChange, ResourceChange

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

__all__ = ["OutputFormat", "render_as", "to_json", "to_markdown", "to_text"]


class OutputFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _show(value: Any) -> str:
    """One line: a value as is (a digest's tail matters), a large structure cut short."""
    if isinstance(value, str) and "\n" not in value:
        return value
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    first = text.splitlines()[0] if text else ""
    return text if len(text) <= 160 and first == text else f"{first[:120]}... ({len(text)} chars)"


def _diff_lines(changes: tuple[PropertyChange, ...]) -> list[str]:
    lines = []
    for c in changes:
        mark = "  # replaces" if c.replaces else ""
        if isinstance(c.before, str) and isinstance(c.after, str) and "\n" in c.before + c.after:
            lines += _text_lines(c.path, c.before, c.after, mark)
            continue
        if c.kind != "add":
            lines.append(f"- {c.path}: {_show(c.before)}{'' if c.kind == 'change' else mark}")
        if c.kind != "remove":
            lines.append(f"+ {c.path}: {_show(c.after)}{mark}")
    return lines


def _text_lines(path: str, before: str, after: str, mark: str) -> list[str]:
    """A multi-line text (a ConfigMap's file) shows only the lines that differ, numbered."""
    old, new = before.splitlines(), after.splitlines()
    lines = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag != "equal":
            lines += [f"- {path} line {i + 1}: {old[i].strip()}" for i in range(i1, i2)]
            lines += [f"+ {path} line {j + 1}: {new[j].strip()}{mark}" for j in range(j1, j2)]
    return lines


def _why(change: ResourceChange) -> str:
    if change.replaced_by:
        return "replaces on " + ", ".join(change.replaced_by)
    if change.changes:
        return f"{len(change.changes)} propert{'y' if len(change.changes) == 1 else 'ies'}"
    return ""


def _header(diff: PlanDiff) -> str:
    return f"stack {diff.stack}" + (f" against {diff.against}" if diff.against else "")


_STYLE = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red"}
_MARK = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


def to_text(diff: PlanDiff) -> RenderableType:
    """For a terminal: the release, the plan, then each changed resource with its properties."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [
        Text(f"mlops diff: {_header(diff)}", style="bold"),
        Text(diff.release.line(), style="bold cyan"),
        Text(diff.summary),
        Text(diff.plan_line()),
    ]
    for action in ACTIONS:
        group = [c for c in diff.resources if c.action == action]
        if group:
            parts.append(Text(f"\n{action} ({len(group)})", style=f"bold {_STYLE[action]}"))
        for change in group:
            line = Text(f"  {_MARK[action]:>2} ", style=_STYLE[action])
            line.append(f"{change.name}", style="bold")
            line.append(f"  {change.describes}")
            if change.replaced_by:
                line.append(f"  (replaces on {', '.join(change.replaced_by)})", style=_STYLE[action])
            parts.append(line)
            parts += [_text_line(f"      {d}") for d in _diff_lines(change.changes)]
    if diff.outputs:
        parts.append(Text("\noutputs", style="bold"))
        parts += [_text_line(f"      {d}") for d in _diff_lines(diff.outputs)]
    return Group(*parts)


def _text_line(line: str) -> Text:
    from rich.text import Text

    style = {"-": "red", "+": "green"}.get(line.strip()[:1], "")
    return Text(line, style=style)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_COLLAPSE_OVER = 6
"""Diff lines shown open; longer property lists go in a collapsed <details> block."""


def to_markdown(diff: PlanDiff) -> str:
    """For a pull-request comment: stable ordering and no timestamps, so a re-run is identical."""
    lines = [
        f"### `mlops diff`: {_header(diff)}",
        "",
        f"**{diff.release.line()}**",
        "",
        diff.summary,
        "",
        f"**{diff.plan_line()}**",
    ]
    if diff.resources:
        lines += ["", "| action | resource | object | why |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {c.action} | `{c.name}` | {_cell(c.describes)} | {_cell(_why(c))} |" for c in diff.resources
        ]
    for change in diff.resources:
        lines += _md_details(f"`{change.name}` ({change.action})", _diff_lines(change.changes))
    lines += _md_details("stack outputs", _diff_lines(diff.outputs))
    return "\n".join(lines) + "\n"


def _md_details(title: str, diff_lines: list[str]) -> list[str]:
    if not diff_lines:
        return []
    block = ["```diff", *(d.replace("```", "'''") for d in diff_lines), "```"]
    if len(diff_lines) <= _COLLAPSE_OVER:
        return ["", f"{title}:", "", *block]
    summary = html.escape(title.replace("`", ""))
    return [
        "",
        f"<details><summary>{summary}: {len(diff_lines)} lines</summary>",
        "",
        *block,
        "",
        "</details>",
    ]


def to_json(diff: PlanDiff) -> str:
    data = asdict(diff)
    data.update(has_changes=diff.has_changes, counts=diff.counts, release_line=diff.release.line())
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def render_as(diff: PlanDiff, output: OutputFormat) -> str:
    """Markdown or JSON text of a diff (text is a rich renderable: `to_text`)."""
    return to_json(diff) if output is OutputFormat.json else to_markdown(diff)
