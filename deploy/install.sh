#!/usr/bin/env bash
# Installs the persistd daemon for systemd: the binary into ~/.local/bin
# (/usr/local/bin as root), the user unit into ~/.config/systemd/user/, and,
# when a systemd user manager answers, enables and (re)starts it. Without
# one (containers, CI, WSL) it says so and stops there: clients then start
# the daemon themselves on first use (PERSISTD_AUTOSTART, on by default).
#
#   bash deploy/install.sh [--prefix DIR] [--binary PATH] [--no-systemd]
#
# The binary is --binary, else this repo's bazel-bin/server/persistd, else
# the daemon inside the persistd wheel installed for python3 (or $PYTHON).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
prefix=""
binary=""
use_systemd=1
while (($#)); do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --no-systemd) use_systemd=0; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[persistd install]\033[0m %s\n' "$*" >&2; }

if [ -z "$binary" ]; then
  if [ -x "$repo/bazel-bin/server/persistd" ]; then
    binary="$repo/bazel-bin/server/persistd"
  else
    for py in "${PYTHON:-}" python3 python; do
      [ -n "$py" ] && command -v "$py" >/dev/null || continue
      binary="$("$py" -c 'from persistd.binary import packaged_binary as p; print(p() or "")' 2>/dev/null || true)"
      [ -n "$binary" ] && break
    done
  fi
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
  say "no persistd binary: build it (bazel build //server:persistd), install the wheel" \
      "(bash deploy/build_wheel.sh; pip install dist/persistd-*.whl), or pass --binary PATH"
  exit 1
fi

if [ -z "$prefix" ]; then
  if [ "$(id -u)" = 0 ]; then prefix=/usr/local/bin; else prefix="$HOME/.local/bin"; fi
fi
mkdir -p "$prefix"
# Copy then rename: a running daemon's executable is replaced, not rewritten
# in place (which fails with "Text file busy").
tmp="$prefix/.persistd.install.$$"
cp "$binary" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$prefix/persistd"
say "installed $("$prefix/persistd" --version) at $prefix/persistd"

unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
mkdir -p "$unit_dir"
sed "s|^ExecStart=[^ ]*|ExecStart=$prefix/persistd|" "$here/persistd.service" \
  > "$unit_dir/persistd.service"
say "wrote $unit_dir/persistd.service"

if [ "$use_systemd" = 1 ] && command -v systemctl >/dev/null \
    && systemctl --user show-environment >/dev/null 2>&1; then
  systemctl --user daemon-reload
  systemctl --user enable persistd.service >/dev/null 2>&1
  systemctl --user restart persistd.service
  say "enabled and started the user unit (systemctl --user status persistd)"
else
  say "no systemd user manager here: the unit is not enabled. Clients start" \
      "the daemon on first use; or run it yourself: $prefix/persistd"
fi
case ":$PATH:" in
  *":$prefix:"*) ;;
  *) say "note: $prefix is not on PATH" ;;
esac
