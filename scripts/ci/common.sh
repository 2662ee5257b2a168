# shellcheck shell=bash
# Sourced (never run) by the scripts under scripts/ci/: where the repository is, logging, and
# the checks every script makes on its environment. The workflows in .github/workflows/ call
# the scripts, never this file.
#
# The repository is the git work tree that holds the current directory (in CI: the checkout,
# GITHUB_WORKSPACE), so a script runs on whatever checkout it is started in, the way the
# tests run it on a copy.

CI_SCRIPT="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

say() { printf '[ci/%s] %s\n' "$CI_SCRIPT" "$*" >&2; }

# fail CODE MESSAGE: print the message and exit with CODE.
fail() {
  local code="$1"; shift
  printf '[ci/%s] ERROR: %s\n' "$CI_SCRIPT" "$*" >&2
  exit "$code"
}

# require_env NAME HINT: NAME must be set and not empty; HINT says where it comes from.
require_env() {
  if [ -z "${!1:-}" ]; then fail 2 "$1 is not set ($2)"; fi
}

# valid_stack NAME: a Pulumi stack name as this repository uses them (Pulumi.<name>.yaml).
valid_stack() { [[ "$1" =~ ^[a-z][a-z0-9-]{0,30}$ ]]; }

# valid_release_id ID: a release id (12 lowercase hex characters, as `mlops release-id` prints).
valid_release_id() { [[ "$1" =~ ^[0-9a-f]{12}$ ]]; }

# read_stacks: the array `stacks` from $STACKS, each a valid stack name (exit 2 otherwise).
read_stacks() {
  read -r -a stacks <<< "$STACKS"
  [ "${#stacks[@]}" -gt 0 ] || fail 2 "STACKS is empty"
  local stack
  for stack in "${stacks[@]}"; do
    valid_stack "$stack" || fail 2 "not a stack name: '$stack'"
  done
}

# set_output NAME VALUE: a step output when GITHUB_OUTPUT is set (single-line values only).
set_output() {
  if [ -n "${GITHUB_OUTPUT:-}" ]; then printf '%s=%s\n' "$1" "$2" >> "$GITHUB_OUTPUT"; fi
}

REPO="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
cd "$REPO" || exit 2
# The mlops command line (scripts/ci/setup.sh puts the venv's bin on PATH); MLOPS overrides it.
MLOPS="${MLOPS:-mlops}"
STACKS="${STACKS:-dev prod}"
