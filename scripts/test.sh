#!/usr/bin/env bash
# Installs what is needed, builds with ASan+UBSan (and sftpfs alone in release, for the memory tests),
# and runs every test:
#   unit tests (codec, options, caches), transport and engine tests against a private sshd,
#   filesystem tests through real FUSE mounts (the model-based random test among them, bounded by
#   SFTPFS_MODEL_SECONDS per mode), and a bounded libFuzzer run on the reply decoder.
# Every stage runs even when an earlier one fails; the exit code says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build/test
fuzz_seconds=${SFTPFS_FUZZ_SECONDS:-60}
logs=$(mktemp -d /tmp/sftpfs-test-logs-XXXXXX)
# Every temp dir of this run (servers, mount points, pytest's) lives under one directory of its own,
# so runs side by side neither clean up each other's files nor count each other's mounts.
run_tmp=$(mktemp -d /tmp/sftpfs-test-run-XXXXXX)
chmod 755 "$run_tmp"
export TMPDIR=$run_tmp

fuse_mounts() { awk -v dir="$run_tmp/" '$3 ~ /^fuse/ && index($2, dir) == 1 {print $2}' /proc/mounts | sort; }

bash scripts/install-deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

echo "== build (ASan+UBSan) in $build"
if ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSFTPFS_SANITIZE=ON >"$logs/cmake.log" 2>&1 &&
       cmake --build "$build" -j2 >"$logs/build.log" 2>&1; }; then
  cat "$logs/cmake.log" "$logs/build.log" | grep -v '^\[' | tail -n 60
  echo "test.sh: the build failed" >&2
  exit 1
fi

# The memory tests (tests/fs/test_memory.py) measure the release binary: sanitizers multiply memory use.
release=$root/build/release
echo "== release build of sftpfs (for the memory tests) in $release"
if ! { cmake -S . -B "$release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$logs/cmake-release.log" 2>&1 &&
       cmake --build "$release" -j2 --target sftpfs >"$logs/build-release.log" 2>&1; }; then
  cat "$logs/cmake-release.log" "$logs/build-release.log" | grep -v '^\[' | tail -n 60
  echo "test.sh: the release build failed" >&2
  exit 1
fi
export SFTPFS_RELEASE_BIN=$release/sftpfs

# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/support/lsan.supp

passed=0 failed=0 failures=()
record() {  # name, passed, failed
  passed=$((passed + $2)); failed=$((failed + $3))
  [ "$3" -eq 0 ] || failures+=("$1")
}

echo "== unit, transport and engine tests (ctest)"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 900 2>&1 | tee "$logs/ctest.log" | grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|FAILED|Failed' || true
ctest_total=$(grep -oE 'tests failed out of [0-9]+' "$logs/ctest.log" | grep -oE '[0-9]+$' || echo 0)
ctest_failed=$(grep -oE '[0-9]+ tests failed out of' "$logs/ctest.log" | grep -oE '^[0-9]+' || echo 1)
[ "$ctest_total" -gt 0 ] || ctest_failed=1
record ctest $((ctest_total - ctest_failed)) "$ctest_failed"

echo "== filesystem tests through real mounts (pytest)"
SFTPFS_BIN=$build/sftpfs /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/fs 2>&1 | tee "$logs/pytest.log" | tail -n 40
py_passed=$(grep -oE '[0-9]+ passed' "$logs/pytest.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
py_failed=$(tail -n 1 "$logs/pytest.log" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
[ "$py_passed" -gt 0 ] || py_failed=$((py_failed > 0 ? py_failed : 1))
record pytest "$py_passed" "${py_failed:-0}"

echo "== fuzzing the reply decoder and the config parsers for ${fuzz_seconds}s"
if bash scripts/run-fuzz.sh "$fuzz_seconds"; then record fuzz 1 0; else record fuzz 0 1; fi

# Nothing may be left behind: no mount made during this run.
leftover_mounts=$(fuse_mounts)
if [ -n "$leftover_mounts" ]; then
  echo "test.sh: mounts left behind: $leftover_mounts" >&2
  record leftovers 0 1
fi

[ ${#failures[@]} -eq 0 ] || echo "failed stages: ${failures[*]} (logs in $logs)"
[ -n "$leftover_mounts" ] || rm -rf "$run_tmp"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
