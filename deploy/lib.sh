# Shared steps of deploy/setup.sh and deploy/test.sh. Every step is
# idempotent: it checks before it installs, builds incrementally, and
# reuses a daemon that already answers.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PY="$VENV/bin/python"

APT_PACKAGES=(
  bazel-bootstrap bazel-rules-java
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev zlib1g-dev libbz2-dev liblzma-dev liblz4-dev libzstd-dev
  libisal-dev libdeflate-dev
  libspdlog-dev
  libgtest-dev
  clang libclang-rt-14-dev
)

log() { printf '\033[1m[persistd]\033[0m %s\n' "$*" >&2; }

ensure_apt_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  if ! command -v python3 >/dev/null; then missing+=(python3); fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  log "installing Python dependencies (PyPI) and the persistd client"
  "$PY" -m pip install -q --disable-pip-version-check -r "$REPO_ROOT/client/python/requirements-dev.txt"
  # Stubs are generated from proto/ at build time, so always rebuild.
  "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation \
    --no-deps --force-reinstall "$REPO_ROOT/client/python"
}

build_daemon() {
  log "building persistd (Bazel, offline)"
  (cd "$REPO_ROOT" && bazel build //server:persistd 2>&1 | tail -n 3)
}

DAEMON="$REPO_ROOT/bazel-bin/server/persistd"
