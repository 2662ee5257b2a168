# shellcheck shell=bash
# Source this file to use the Pulumi engine prepared by scripts/bootstrap-engine:
#
#   . scripts/engine_env.sh            # exports PATH, PULUMI_HOME, ...
#   ENGINE_ENV_BOOTSTRAP=1 . scripts/engine_env.sh   # run the bootstrap first if needed
#
# It sources .tools/current/engine.env (written by the bootstrap), which sets
#   PATH                                  bin dir with pulumi + pulumi-language-python + helper scripts
#   PULUMI_HOME                           .tools/pulumi-home (holds the kubernetes plugin)
#   PULUMI_SKIP_UPDATE_CHECK=1
#   PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true   (never try to download plugins)
#   PULUMI_ENGINE_BIN_DIR                 the same bin dir, for tests that want absolute paths
# A backend and a passphrase are left to the caller, e.g.
#   export PULUMI_BACKEND_URL=file://$STATE_DIR PULUMI_CONFIG_PASSPHRASE=test
_engine_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_engine_tools="${ENGINE_TOOLS_DIR:-$_engine_root/.tools}"
_engine_file="$_engine_tools/current/engine.env"
if [ ! -f "$_engine_file" ] && [ "${ENGINE_ENV_BOOTSTRAP:-0}" = 1 ]; then
  "$_engine_root/scripts/bootstrap-engine" >&2 || { echo "engine_env.sh: bootstrap failed" >&2; return 1 2>/dev/null || exit 1; }
fi
if [ -f "$_engine_file" ]; then
  # shellcheck disable=SC1090
  . "$_engine_file"
  # Warn when the venv's Python SDKs no longer match the prepared engine.
  _engine_key="$(basename "$(readlink "$_engine_tools/current" 2>/dev/null || echo unknown)")"
  for _engine_d in "${ENGINE_VENV:-${MLOPS_VENV:-$_engine_root/.venv}}"/lib/python*/site-packages/pulumi-[0-9]*.dist-info; do
    [ -d "$_engine_d" ] || continue
    _engine_v="${_engine_d##*/pulumi-}"; _engine_v="${_engine_v%.dist-info}"
    case "$_engine_key" in
      "pulumi-v$_engine_v-"*) ;;
      *) echo "engine_env.sh: note: venv has pulumi $_engine_v but .tools/current is $_engine_key; re-run scripts/bootstrap-engine" >&2 ;;
    esac
  done
else
  echo "engine_env.sh: $_engine_file not found; run scripts/bootstrap-engine first" >&2
  unset _engine_root _engine_tools _engine_file
  return 1 2>/dev/null || exit 1
fi
unset _engine_root _engine_tools _engine_file _engine_key _engine_d _engine_v
