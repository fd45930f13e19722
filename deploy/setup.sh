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
  # The daemon logs in its store (<store>/persistd.log, which `persistctl
  # status` names); its stderr only says why it could not start.
  startup_errors="$(mktemp)"
  log "starting $DAEMON"
  nohup "$DAEMON" >/dev/null 2>"$startup_errors" </dev/null &
  for _ in $(seq 100); do
    "$PY" -m persistd status >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$PY" -m persistd status >/dev/null || { cat "$startup_errors"; rm -f "$startup_errors"; exit 1; }
  rm -f "$startup_errors"
  log "persistd serves; its log: $("$PY" -m persistd status --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["log_file"])')"
fi

log "running the spec's basic example"
workdir="$(mktemp -d)"
(cd "$workdir" && "$PY" "$REPO_ROOT/deploy/example.py")
rm -rf "$workdir"
log "done: the client is in .venv/, the daemon at bazel-bin/server/persistd"
