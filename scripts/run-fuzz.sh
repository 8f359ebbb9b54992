#!/usr/bin/env bash
# Builds the fuzzers (clang, libFuzzer, ASan+UBSan) in build/fuzz and runs them for SECONDS in all
# (default 60): the SFTP reply decoder for three quarters of it, the config/command-line parsers for the
# rest, each on a scratch copy of its seed corpus. Prints one line on success; on a crash prints the
# fuzzer's report, keeps the crashing input under build/fuzz/artifacts/ and exits non-zero.
#   usage: scripts/run-fuzz.sh [SECONDS]
set -euo pipefail

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build/fuzz
artifacts=$build/artifacts
work=$(mktemp -d "${TMPDIR:-/tmp}/sftpfs-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

run_quiet() {  # runs a step, showing its output only if it fails
  local what=$1
  shift
  if ! "$@" >"$work/step.log" 2>&1; then
    echo "run-fuzz: $what failed:" >&2
    cat "$work/step.log" >&2
    exit 1
  fi
}

run_quiet "configure" cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 \
  -DSFTPFS_FUZZ=ON -DSFTPFS_TESTS=OFF
run_quiet "build" cmake --build "$build" --target reply_fuzzer config_fuzzer -j2
mkdir -p "$artifacts"

# fuzz TARGET CORPUS_DIR SECONDS MAX_LEN
fuzz() {
  local target=$1 corpus=$2 secs=$3 max_len=$4 status=0
  mkdir -p "$work/$target"
  cp "$root/tests/fuzz/corpus/$corpus"/* "$work/$target/"
  "$build/tests/fuzz/$target" "$work/$target" \
    -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$target-" >"$work/$target.log" 2>&1 || status=$?
  if (( status != 0 )) || grep -qE 'ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:' "$work/$target.log"; then
    echo "run-fuzz: $target failed (exit $status); report follows, inputs in $artifacts" >&2
    tail -n 80 "$work/$target.log" >&2
    return 1
  fi
  local runs corpus_size
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log" | tail -n 1)
  corpus_size=$(find "$work/$target" -type f | wc -l)
  echo "run-fuzz: $target clean: ${runs:-?} inputs in ${secs}s, corpus grew to ${corpus_size} files"
}

# The reply decoder faces the network, so it gets most of the time.
config_seconds=$(( seconds / 4 > 0 ? seconds / 4 : 1 ))
reply_seconds=$(( seconds - config_seconds > 0 ? seconds - config_seconds : 1 ))
failed=0
fuzz reply_fuzzer reply "$reply_seconds" 4096 || failed=1
fuzz config_fuzzer config "$config_seconds" 2048 || failed=1
exit $failed
