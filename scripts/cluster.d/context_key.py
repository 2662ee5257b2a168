"""Content key of a Dockerfile build: what scripts/build-images compares to decide a rebuild.

    python3 context_key.py CONTEXT DOCKERFILE [IGNOREFILE] [--extra TEXT] [--list]

The key is a hash of TEXT, the Dockerfile, the ignore file and the name and content of every
file of the build context that the Dockerfile's COPY/ADD instructions read (COPY --from reads
another stage and is skipped), after the ignore file's rules, applied the way Docker applies a
.dockerignore: patterns in order, the last one that matches a path or one of its parent
folders decides, `!` re-includes, `**` spans folders. So a change to model/server/ does not
rebuild an image whose ignore file leaves model/server/ out. --list prints the files instead,
--summary a one-line digest of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
from pathlib import Path


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def ignore_rules(path: Path | None) -> list[tuple[re.Pattern[str], bool]]:
    """(regex, excludes) per non-comment line of a .dockerignore."""
    if path is None or not path.is_file():
        return []
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.strip("/")
        if pattern.startswith("./"):
            pattern = pattern[2:]
        rules.append((_pattern_regex(pattern), not negated))
    return rules


def excluded(relpath: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for regex, excludes in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = excludes
    return result


def copy_sources(dockerfile: Path) -> list[str]:
    """Context paths (or globs) the COPY/ADD instructions read, line continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        flags = re.findall(r"--\S+", rest)
        if any(f.startswith("--from") for f in flags):
            continue  # reads another stage, not the context
        rest = re.sub(r"^(?:--\S+\s+)*", "", rest)
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources.extend(args[:-1])
    return sources


def context_files(context: Path, dockerfile: Path, ignore: Path | None) -> list[str]:
    rules = ignore_rules(ignore)
    found: set[str] = set()
    for source in copy_sources(dockerfile):
        for match in sorted(context.glob(source.strip("/"))) or [context / source]:
            if match.is_file():
                found.add(match.relative_to(context).as_posix())
            elif match.is_dir():
                found.update(p.relative_to(context).as_posix() for p in match.rglob("*") if p.is_file())
            else:
                raise SystemExit(f"{dockerfile}: COPY source {source!r} not found in {context}")
    return sorted(f for f in found if not excluded(f, rules))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("context", type=Path)
    parser.add_argument("dockerfile", type=Path)
    parser.add_argument("ignorefile", type=Path, nargs="?")
    parser.add_argument("--extra", default="")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--summary", action="store_true", help="one line: files, or folders with a count")
    args = parser.parse_args()
    files = context_files(args.context, args.dockerfile, args.ignorefile)
    if args.list:
        print("\n".join(files))
        return
    if args.summary:
        groups: dict[str, list[str]] = {}
        for name in files:
            groups.setdefault(name.split("/", 1)[0], []).append(name)
        print(", ".join(v[0] if len(v) == 1 else f"{k}/ ({len(v)} files)" for k, v in groups.items()))
        return
    digest = hashlib.sha256(args.extra.encode() + b"\n")
    for path in [args.dockerfile, args.ignorefile]:
        if path is not None and path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for name in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256((args.context / name).read_bytes()).digest())
    print(digest.hexdigest()[:16])


if __name__ == "__main__":
    main()
