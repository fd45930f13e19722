#!/usr/bin/env bash
# deploy/fuzz.sh [seconds]: builds the libFuzzer targets of server/fuzz with
# `--config=fuzz` (Debian's clang, ASan + UBSan) and runs each for N seconds
# (default 30), one after the other. Prints executions and findings per
# target and exits 1 if any target crashed (an ASan or UBSan report, a
# FUZZ_CHECK, a timeout, a leak).
#
# Out-of-memory findings (-rss_limit_mb=2048) fail the run too, now that
# indexing has memory budgets (PickleLimits); FUZZ_FAIL_ON_OOM=0 only
# reports them. After an OOM the target is restarted for the rest of its
# time, so one memory hog does not hide other findings.
#
# Environment:
#   FUZZ_TARGETS      which targets (default: codec pickle joblib_reader
#                     joblib_writer)
#   FUZZ_WORK         corpora and findings (default:
#                     ${XDG_CACHE_HOME:-$HOME/.cache}/persistd-fuzz); the
#                     corpora grow from run to run
#   FUZZ_FAIL_ON_OOM  0: out-of-memory findings are reported, not failed
#
# A finding reproduces with the printed command, or without sanitizers by
#   bazel run //server/fuzz:<target>_fuzzer -- <file>
# Once fixed, copy it to server/fuzz/regressions/<target>/: the replay tests
# of `bazel test //...` run every file there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SECONDS_PER_TARGET="${1:-30}"
TARGETS=(${FUZZ_TARGETS:-codec pickle joblib_reader joblib_writer})
WORK="${FUZZ_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/persistd-fuzz}"
FAIL_ON_OOM="${FUZZ_FAIL_ON_OOM:-1}"

ensure_apt_packages
cd "$REPO_ROOT"

log "building ${#TARGETS[@]} fuzz targets (bazel --config=fuzz)"
build_targets=(//server/fuzz:make_seeds)
for target in "${TARGETS[@]}"; do
  build_targets+=("//server/fuzz:${target}_fuzzer")
done
if ! bazel build --config=fuzz "${build_targets[@]}" >/tmp/persistd-fuzz-build.log 2>&1; then
  tail -n 30 /tmp/persistd-fuzz-build.log
  log "fuzz build failed"
  exit 1
fi
BIN="$(bazel info --config=fuzz bazel-bin 2>/dev/null)/server/fuzz"

# One libFuzzer run of $1 for at most $2 seconds; its log goes to $3.
run_fuzzer() {
  local target="$1" seconds="$2" log_file="$3"
  local extra_inputs=()
  if [ -d "server/fuzz/regressions/$target" ]; then
    extra_inputs+=("server/fuzz/regressions/$target")
  fi
  # -malloc_limit_mb above the RSS limit: liblzma reserves the dictionary
  # a header declares (up to 4 GiB) before decoding, untouched address
  # space, as Python's lzma module does; RSS stays capped.
  "$BIN/${target}_fuzzer" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=8192 \
    -timeout=25 -max_len=32768 -print_final_stats=1 \
    -dict=server/fuzz/persistd.dict \
    -artifact_prefix="$WORK/findings/$target/" \
    "$WORK/corpus/$target" "$WORK/seeds/$target" "${extra_inputs[@]}" \
    >"$log_file" 2>&1
}

total_crashes=0
total_ooms=0
summary=()
for target in "${TARGETS[@]}"; do
  mkdir -p "$WORK/corpus/$target" "$WORK/findings/$target"
  rm -rf "$WORK/seeds/$target"
  mkdir -p "$WORK/seeds/$target"
  "$BIN/make_seeds" "$target" "$WORK/seeds/$target"
  case "$target" in
    pickle|joblib_reader) cp server/format/testdata/*.pkl "$WORK/seeds/$target/" ;;
  esac

  log "fuzzing $target for ${SECONDS_PER_TARGET}s"
  executions=0
  crashes=0
  ooms=0
  start=$SECONDS
  run=0
  while true; do
    left=$((SECONDS_PER_TARGET - (SECONDS - start)))
    [ "$left" -gt 0 ] || break
    run=$((run + 1))
    log_file="$WORK/$target.$run.log"
    set +e
    run_fuzzer "$target" "$left" "$log_file"
    rc=$?
    set -e
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log_file" | tail -n 1)
    executions=$((executions + ${n:-0}))
    [ "$rc" = 0 ] && break
    artifact=$(sed -n "s/.*Test unit written to //p" "$log_file" | tail -n 1)
    if grep -q 'ERROR: libFuzzer: out-of-memory' "$log_file"; then
      ooms=$((ooms + 1))
      echo "  out-of-memory: ${artifact:-?} ($(grep -m1 -o 'out-of-memory ([^)]*)' "$log_file"))"
      continue
    fi
    crashes=$((crashes + 1))
    grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|FUZZ_CHECK' \
      "$log_file" | sed 's/^/  /' || true
    echo "  crash input: ${artifact:-?} (log $log_file)"
    echo "  reproduce:   $BIN/${target}_fuzzer ${artifact:-<file>}"
    break
  done
  line="$target: $executions executions, $crashes crashes, $ooms out-of-memory"
  echo "$line"
  summary+=("$line")
  total_crashes=$((total_crashes + crashes))
  total_ooms=$((total_ooms + ooms))
done

echo "fuzz summary (${SECONDS_PER_TARGET}s per target):"
printf '  %s\n' "${summary[@]}"
if [ "$total_crashes" -gt 0 ] || { [ "$FAIL_ON_OOM" = 1 ] && [ "$total_ooms" -gt 0 ]; }; then
  log "fuzzing found $total_crashes crashes and $total_ooms out-of-memory inputs (in $WORK/findings)"
  exit 1
fi
if [ "$total_ooms" -gt 0 ]; then
  log "fuzzing: no crashes; $total_ooms out-of-memory inputs (in $WORK/findings)"
fi
