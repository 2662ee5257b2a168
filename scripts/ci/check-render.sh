#!/usr/bin/env bash
# CI step, credential-free: render every stack with `mlops render` (Pulumi's mocks, no cloud,
# no cluster, no secrets) and fail when any Kubernetes object breaks the Kubernetes schemas or
# any resource breaks the policy pack. Every stack is rendered even after one fails, so one
# run names every violation.
#
# Env: STACKS (default "dev prod"), RENDER_DIR (default RUNNER_TEMP/mlops-render, else a new
# temporary folder; one subfolder per stack), SUMMARY_FILE (optional: a markdown table of the
# results is appended to it; default GITHUB_STEP_SUMMARY), MLOPS (default mlops).
# Exit: 0 all stacks pass, 1 a stack fails its schemas or policies (or does not render),
# 2 bad input.
# Locally: scripts/ci/check-render.sh   (or STACKS=prod scripts/ci/check-render.sh)
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -n "${RENDER_DIR:-}" ]; then
  mkdir -p "$RENDER_DIR"
elif [ -n "${RUNNER_TEMP:-}" ]; then
  RENDER_DIR="$RUNNER_TEMP/mlops-render"; mkdir -p "$RENDER_DIR"
else
  RENDER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mlops-render.XXXXXX")"
fi
SUMMARY_FILE="${SUMMARY_FILE:-${GITHUB_STEP_SUMMARY:-}}"

read_stacks
for stack in "${stacks[@]}"; do
  [ -f "Pulumi.$stack.yaml" ] || fail 2 "no stack file Pulumi.$stack.yaml in $REPO"
done

failed=()
rows=()
for stack in "${stacks[@]}"; do
  out="$RENDER_DIR/$stack"
  log="$RENDER_DIR/$stack.log"
  say "mlops render --stack $stack --out $out"
  rc=0
  "$MLOPS" render --stack "$stack" --out "$out" > "$log" 2>&1 || rc=$?
  cat "$log" >&2
  # The last line of a render is its verdict ("ok N objects pass ..." or the last problem).
  verdict="$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr -d '`|' || true)"
  if [ "$rc" -eq 0 ]; then
    rows+=("| \`$stack\` | passes | $verdict |")
  else
    failed+=("$stack")
    problems="$(grep -c '^x ' "$log" || true)"
    rows+=("| \`$stack\` | **fails** (exit $rc, $problems problems) | $verdict |")
  fi
done

if [ -n "$SUMMARY_FILE" ]; then
  {
    echo "### Schemas and policy pack (\`mlops render\`)"
    echo
    echo "| stack | result | last line |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
  } >> "$SUMMARY_FILE"
fi

if [ "${#failed[@]}" -gt 0 ]; then
  fail 1 "schema or policy violations (or no render) in: ${failed[*]} (renders and logs under $RENDER_DIR)"
fi
say "all stacks pass the Kubernetes schemas and the policy pack: ${stacks[*]} (renders under $RENDER_DIR)"
