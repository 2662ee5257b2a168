# Sourced by scripts/release.sh and scripts/test.sh: make $MLOPS_VENV (default .venv) match
# requirements.txt. Re-installs only when a requirements file or pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLOPS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.mlops-requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT"/images/requirements/*.txt "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "==> installing requirements.txt into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet -r requirements.txt)
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
