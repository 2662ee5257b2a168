#!/usr/bin/env bash
# CI step: install the pinned requirements.txt into the venv (scripts/setup-venv.sh: .venv, or
# MLOPS_VENV) and put its bin folder on PATH for the later steps of the job (GITHUB_PATH), so
# that `mlops` and the Pulumi Python SDK are there; the Pulumi CLI comes from pulumi/actions.
#
# Env: MLOPS_VENV (default .venv), PYTHON (default python3), GITHUB_PATH (set by Actions).
# Locally: scripts/ci/setup.sh (the same as `source scripts/setup-venv.sh`).
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

say "installing requirements.txt into ${MLOPS_VENV:-.venv}"
# shellcheck source=SCRIPTDIR/../setup-venv.sh
source "$REPO/scripts/setup-venv.sh"
"$VENV/bin/mlops" --help >/dev/null || fail 1 "$VENV/bin/mlops does not run"
if [ -n "${GITHUB_PATH:-}" ]; then
  echo "$VENV/bin" >> "$GITHUB_PATH"
  say "added $VENV/bin to GITHUB_PATH"
fi
say "ready: $("$VENV/bin/python" --version), $VENV/bin/mlops"
