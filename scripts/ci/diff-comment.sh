#!/usr/bin/env bash
# CI step, credential-free: the pull-request comment that shows what this change does to each
# stack's desired state, from `mlops diff --stack NAME --format markdown` (the mocks render of
# the checkout against the same render at DIFF_AGAINST). The markdown body is written to
# COMMENT_FILE, which the workflow hands to the comment action; it is written even when a diff
# fails, so the comment says which stack failed and why.
#
# Env: COMMENT_FILE (required: where the markdown goes), STACKS (default "dev prod"),
# DIFF_AGAINST (optional git revision, e.g. the pull request's base commit; default: what
# `mlops diff` defaults to, the merge base with the main branch), MLOPS (default mlops),
# MAX_STACK_CHARS (default 30000: a stack's section is cut there, since a GitHub comment holds
# at most 65536 characters).
# Outputs (GITHUB_OUTPUT): changed_stacks (space-separated), failed_stacks.
# Exit: 0 every diff ran (with or without changes; `mlops diff` exits 0 or 2), 1 a diff failed,
# 2 bad input.
# Locally: COMMENT_FILE=/tmp/diff.md scripts/ci/diff-comment.sh && cat /tmp/diff.md
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env COMMENT_FILE "the path the workflow passes to the comment step"
MAX_STACK_CHARS="${MAX_STACK_CHARS:-30000}"
[[ "$MAX_STACK_CHARS" =~ ^[0-9]+$ ]] || fail 2 "MAX_STACK_CHARS must be a number (got '$MAX_STACK_CHARS')"
read_stacks
against=()
against_text="the merge base with the main branch"
if [ -n "${DIFF_AGAINST:-}" ]; then
  # A revision is passed as one argument, never through a shell; still, accept only the
  # characters revisions are made of.
  [[ "$DIFF_AGAINST" =~ ^[A-Za-z0-9._/~^-]{1,200}$ ]] || fail 2 "DIFF_AGAINST is not a git revision: '$DIFF_AGAINST'"
  git rev-parse --verify --quiet "$DIFF_AGAINST^{commit}" >/dev/null \
    || fail 2 "DIFF_AGAINST=$DIFF_AGAINST is not a commit in this checkout (fetch-depth: 0?)"
  against=(--against "$DIFF_AGAINST")
  against_text="\`$(git rev-parse --short=12 "$DIFF_AGAINST^{commit}")\`"
fi
head_text="$(git rev-parse --short=12 HEAD 2>/dev/null || echo 'working tree')"

# `mlops diff` exits 2 for "changes", which is also what an unknown command exits with; so make
# sure the command exists before reading its exit codes.
"$MLOPS" diff --help >/dev/null 2>&1 || fail 1 "'$MLOPS diff' is not available (is the mlops CLI installed? scripts/ci/setup.sh)"

work="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/diff-comment.XXXXXX")"
trap 'rm -rf "$work"' EXIT
changed=()
failed=()
sections=()
rows=()
for stack in "${stacks[@]}"; do
  say "mlops diff --stack $stack ${against[*]} --format markdown"
  rc=0
  "$MLOPS" diff --stack "$stack" "${against[@]}" --format markdown > "$work/$stack.md" 2> "$work/$stack.err" || rc=$?
  cat "$work/$stack.err" >&2
  case "$rc" in
    0) status="no changes" ;;
    2) status="changes"; changed+=("$stack") ;;
    *) status="**diff failed** (exit $rc)"; failed+=("$stack") ;;
  esac
  rows+=("| \`$stack\` | $status |")
  section="$work/$stack.section"
  {
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; then
      # `mlops diff` heads its markdown with the stack's name and release.
      body="$(cat "$work/$stack.md")"
      if [ "${#body}" -gt "$MAX_STACK_CHARS" ]; then
        printf '%s\n\n' "${body:0:$MAX_STACK_CHARS}"
        echo "_(cut at $MAX_STACK_CHARS characters: run \`mlops diff --stack $stack\` for the whole diff)_"
      else
        printf '%s\n' "$body"
      fi
    else
      echo "### Stack \`$stack\`: diff failed (exit $rc)"
      echo
      echo '```text'
      tail -n 40 "$work/$stack.err" | cut -c1-300
      echo '```'
    fi
    echo
  } > "$section"
  sections+=("$section")
done

mkdir -p "$(dirname "$COMMENT_FILE")"
{
  echo "## Desired state: \`mlops diff\`"
  echo
  echo "This pull request (\`${head_text}\`) against ${against_text}, rendered credential-free"
  echo "under Pulumi's mocks. The real \`pulumi preview --diff\` of each stack is in its own"
  echo "comment when the repository's Pulumi credentials are set."
  echo
  echo "| stack | desired state |"
  echo "| --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  cat "${sections[@]}"
  echo "<sub>scripts/ci/diff-comment.sh; locally: \`mlops diff --stack NAME\`</sub>"
} > "$COMMENT_FILE"
set_output changed_stacks "${changed[*]}"
set_output failed_stacks "${failed[*]}"
say "comment written to $COMMENT_FILE (changes: ${changed[*]:-none}; failed: ${failed[*]:-none})"
if [ "${#failed[@]}" -gt 0 ]; then
  fail 1 "mlops diff failed for: ${failed[*]}"
fi
