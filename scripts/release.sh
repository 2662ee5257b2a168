#!/usr/bin/env bash
# The main job on the embedded default: a local release of a stack (default: dev).
# Usage: scripts/release.sh [--stack NAME] [--json]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m infra.cli release "$@"
