#!/usr/bin/env bash
# The README on a fresh machine: runs the shell blocks of its sections "Use
# it from your project" and "Worker pools" as they are written, as a user
# with a new HOME (so ~/my-project is a new folder, with a new venv), an
# empty runtime directory and a PATH of system directories; then checks that
# every worker of the pool shares one copy of the model and that
# `persistctl status` shows the pool's clients and their leases.
#
#   bash tests/e2e/fresh_project.sh [WHEEL]
#
# Substitutions, and only these: ~/persistd is this checkout; with WHEEL,
# the wheel path in the install line is WHEEL and `bash
# deploy/build_wheel.sh` is skipped (the test suite passes the wheel it
# built the same way); the pool binds a free port instead of 8000; the last
# line (`kill`) runs after the checks. pip uses the real user's cache.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
WHEEL="${1:-}"
[ -z "$WHEEL" ] || WHEEL="$(realpath "$WHEEL")"
WORK="$(mktemp -d /tmp/pde2e.XXXXXX)"   # short: the daemon's socket lives here
FAKE_HOME="$WORK/home"
RUNTIME="$WORK/run"
mkdir -p "$FAKE_HOME"
mkdir -m 700 "$RUNTIME"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log() { printf '\033[1m[e2e]\033[0m %s\n' "$*" >&2; }

cleanup() {
  local project="$FAKE_HOME/my-project"
  if [ -f "$project/gunicorn.pid" ]; then kill "$(cat "$project/gunicorn.pid")" 2>/dev/null || true; fi
  if [ -x "$project/.venv/bin/persistctl" ]; then
    env -i HOME="$FAKE_HOME" XDG_RUNTIME_DIR="$RUNTIME" PATH=/usr/bin:/bin \
      "$project/.venv/bin/persistctl" stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The README's blocks, split where the checks go (before the `kill` line).
python3 - "$REPO/README.md" "$REPO" "$WHEEL" "$PORT" "$WORK" <<'EOF'
import re, sys
readme, repo, wheel, port, work = sys.argv[1:]
text = open(readme).read()

def section(title):
    match = re.search(r"^## %s\n(.*?)^## " % re.escape(title), text, re.S | re.M)
    if not match:
        sys.exit("README has no section %r" % title)
    return match.group(1)

def blocks(body):
    """Top-level indented code blocks: 4 spaces after a blank line."""
    lines, out, current, previous = body.split("\n"), [], None, ""
    for line in lines:
        if current is None and previous == "" and re.match(r"    \S", line):
            current = []
        if current is not None:
            if line.startswith("    ") or line == "":
                current.append(line[4:])
                previous = line
                continue
            out.append("\n".join(current).strip("\n"))
            current = None
        previous = line
    if current is not None:
        out.append("\n".join(current).strip("\n"))
    return out

script = []
for title in ("Use it from your project", "Worker pools"):
    for block in blocks(section(title)):
        script.extend(block.split("\n"))
script = [line.replace("~/persistd", repo).replace("127.0.0.1:8000", "127.0.0.1:" + port)
          for line in script]
if wheel:
    script = [line for line in script if "bash deploy/build_wheel.sh" not in line]
    script = [re.sub(r"\S*dist/persistd-\S+\.whl", wheel, line) for line in script]
kill = [i for i, line in enumerate(script) if line.startswith("kill ")]
if len(kill) != 1:
    sys.exit("expected one `kill` line in the README's worker-pool block")
head, tail = script[: kill[0]], script[kill[0]:]
open(work + "/readme_steps.sh", "w").write("set -euxo pipefail\n" + "\n".join(head) + "\n")
open(work + "/readme_stop.sh", "w").write("set -euxo pipefail\ncd ~/my-project\n" + "\n".join(tail) + "\n")
EOF

# A user with nothing of ours: new HOME, runtime directory, system PATH.
user_env=(env -i HOME="$FAKE_HOME" XDG_RUNTIME_DIR="$RUNTIME" PATH=/usr/bin:/bin LANG=C.UTF-8
  BIND="127.0.0.1:$PORT" PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
  PIP_DISABLE_PIP_VERSION_CHECK=1)
for name in PIP_INDEX_URL PIP_FIND_LINKS PIP_CERT SSL_CERT_FILE HTTPS_PROXY HTTP_PROXY NO_PROXY \
            https_proxy http_proxy; do
  if [ -n "${!name:-}" ]; then user_env+=("$name=${!name}"); fi
done

log "the README's steps, in $FAKE_HOME (a fresh user)"
cd "$FAKE_HOME"
"${user_env[@]}" bash "$WORK/readme_steps.sh"

log "checks: one shared model, and the pool's leases in persistctl status"
project="$FAKE_HOME/my-project"
"${user_env[@]}" "$project/.venv/bin/persistctl" status --json > "$WORK/status.json"
"${user_env[@]}" "$project/.venv/bin/persistctl" cache ls --json > "$WORK/segments.json"
cd "$project"
"${user_env[@]}" "$project/.venv/bin/python" pool.py pss "$(cat gunicorn.pid)" > "$WORK/pss.json"
"${user_env[@]}" "$project/.venv/bin/python" - "$WORK" "$project" <<'EOF'
import json, os, sys
work, project = sys.argv[1:]
pss = json.load(open(work + "/pss.json"))
status = json.load(open(work + "/status.json"))
segments = json.load(open(work + "/segments.json"))
workers = pss["workers"]
assert len(workers) == 4, pss["workers"]
# The model's segment: the daemon's segment the workers map.
mapped_segments = [s for s in segments if s["segment_path"] in pss["files"]]
assert len(mapped_segments) == 1, (pss["files"].keys(), segments)
[segment] = mapped_segments
size = segment["segment_bytes"]
mapped = pss["files"][segment["segment_path"]]
# Every worker has (nearly) the whole model resident from that one file...
for pid in workers:
    rss = mapped["rss"].get(str(pid), 0)
    assert rss > 0.9 * size, "worker %d has %d of %d bytes of the model" % (pid, rss, size)
# ...and between them they are charged about one model, not four.
ratio = mapped["pss_bytes"] / size
assert ratio < 2.0, "the workers' PSS of the model is %.2fx the model" % ratio
# The daemon serving them is the packaged one, on this user's default socket.
assert status["socket_path"] == os.path.join(os.environ["XDG_RUNTIME_DIR"], "persistd.sock")
assert os.readlink("/proc/%d/exe" % status["pid"]).startswith(project)
# persistctl status lists the pool's clients (one session per process,
# by pid) with their leases: each worker holds the model.
clients = {int(row["pid"]): row for row in status["clients"]}
for pid in workers:
    assert pid in clients, "persistctl status does not list worker %d: %s" % (pid, clients)
    assert clients[pid]["leases"] >= 1, clients[pid]
    assert clients[pid]["segment_bytes"] >= size, clients[pid]
detail = "persistctl status lists every worker's pid with its lease on the model"
print("ok: %d workers share one model (workers' PSS of it: %.2fx); %s"
      % (len(workers), ratio, detail))
EOF

log "the README's last step"
"${user_env[@]}" bash "$WORK/readme_stop.sh"
log "passed"
