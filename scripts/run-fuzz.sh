#!/usr/bin/env bash
# Builds the SFTP reply fuzzer (clang, libFuzzer, ASan+UBSan) in build/fuzz and runs it for SECONDS
# (default 60) on a scratch copy of the seed corpus. Prints one line on success; on a crash prints the
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
run_quiet "build" cmake --build "$build" --target reply_fuzzer -j2

mkdir -p "$work/corpus" "$artifacts"
cp "$root"/tests/fuzz/corpus/reply/* "$work/corpus/"

status=0
"$build/tests/fuzz/reply_fuzzer" "$work/corpus" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" >"$work/fuzz.log" 2>&1 || status=$?

if (( status != 0 )) || grep -qE 'ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:' "$work/fuzz.log"; then
  echo "run-fuzz: reply_fuzzer failed (exit $status); report follows, inputs in $artifacts" >&2
  tail -n 80 "$work/fuzz.log" >&2
  exit 1
fi

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
corpus=$(find "$work/corpus" -type f | wc -l)
echo "run-fuzz: reply_fuzzer clean: ${runs:-?} inputs in ${seconds}s, corpus grew to ${corpus} files"
