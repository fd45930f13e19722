#!/usr/bin/env bash
# One command for a fresh machine: installs what is missing (Debian
# packages, a virtualenv with the client), builds persistd, starts it on the
# default socket unless one already answers, and runs the spec's basic
# example through the Python client.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_apt_packages
ensure_venv
build_daemon

if "$PY" -m persistd status >/dev/null 2>&1; then
  log "persistd already answers on its default socket; reusing it"
else
  logdir="$HOME/.local/state/persistd"
  mkdir -p "$logdir"
  log "starting $DAEMON (log: $logdir/persistd.log)"
  nohup "$DAEMON" >>"$logdir/persistd.log" 2>&1 </dev/null &
  for _ in $(seq 100); do
    "$PY" -m persistd status >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$PY" -m persistd status >/dev/null || { tail "$logdir/persistd.log"; exit 1; }
fi

log "running the spec's basic example"
workdir="$(mktemp -d)"
(cd "$workdir" && "$PY" "$REPO_ROOT/deploy/example.py")
rm -rf "$workdir"
log "done: the client is in .venv/, the daemon at bazel-bin/server/persistd"
