#!/usr/bin/env bash
# One command that runs every test: the C++ gtests through `bazel test`,
# then the Python suite, which starts real persistd daemons on temporary
# sockets. Installs what is missing first, like setup.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_apt_packages
ensure_venv

log "C++ tests (bazel test //...)"
cd "$REPO_ROOT"
set +e
# The C++ client's cross-language tests (tests/cpp) write and read files
# with this python's persistd and joblib.
bazel test --test_env=PERSISTD_TEST_PYTHON="$PY" //... 2>&1 | tee /tmp/persistd-bazel-test.log | grep -E '(PASSED|FAILED|TIMEOUT|NO STATUS|ERROR)' 
bazel_rc=${PIPESTATUS[0]}
set -e
passed=$(grep -c ' PASSED in' /tmp/persistd-bazel-test.log || true)
failed=$(grep -cE ' (FAILED|TIMEOUT|NO STATUS)' /tmp/persistd-bazel-test.log || true)
echo "gtest: $passed passed, $failed failed"
if [ "$bazel_rc" != 0 ]; then
  tail -n 30 /tmp/persistd-bazel-test.log
  log "bazel test failed (exit $bazel_rc)"
  exit "$bazel_rc"
fi

log "type check (mypy --strict, the client package)"
(cd "$REPO_ROOT/client/python" && "$PY" -m mypy persistd)

log "Python tests (pytest, real daemons on temporary sockets)"
PERSISTD_BIN="$DAEMON" "$PY" -m pytest -q -p no:cacheprovider "$REPO_ROOT/tests/python" "$@"

# libFuzzer targets (server/fuzz) with ASan + UBSan: 30 s each by default,
# four targets, about 2 minutes plus an incremental clang build.
# PERSISTD_FUZZ_SECONDS=0 skips them.
fuzz_seconds="${PERSISTD_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  log "fuzzing (deploy/fuzz.sh, ${fuzz_seconds}s per target)"
  "$REPO_ROOT/deploy/fuzz.sh" "$fuzz_seconds"
fi
