#!/usr/bin/env bash
# The full server matrix: the filesystem tests that make sense on any SFTP server, run once per server
# (tests/fs/servers.py starts each on 127.0.0.1; tests marked needs(...) that a server lacks are skipped).
# scripts/test.sh runs only tests/fs/test_servers.py on every server (a smoke test and each known
# difference); this runs the broader files too. Builds nothing: run scripts/test.sh (or build
# build/test) first.
#
#   bash scripts/test-servers.sh [SERVER...]     default: every server but openssh (the suite's own) and rclone
#
# What each skips (needs(...) markers against servers.FEATURES): gesftpserver, asyncssh: lchown of a
# link, rsync's second pass (no lsetstat: symlink times); proftpd: those and readlink, tar round trip
# (link targets come back absolute in its chroot); paramiko: those two, truncate, ftruncate (it zeroes),
# hard links, df, mv -T onto a directory (no posix-rename). rclone is left out by default: it is too
# far from a POSIX filesystem for these files (no symlinks, chmod, times or appends; files complete at
# CLOSE); tests/fs/test_servers.py covers what it does.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
run_tmp=$(mktemp -d /tmp/sftpfs-servers-run-XXXXXX)
chmod 755 "$run_tmp"
export TMPDIR=$run_tmp
export SFTPFS_BIN=${SFTPFS_BIN:-$root/build/test/sftpfs}
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(internal-sftp gesftpserver proftpd asyncssh paramiko dropbear)
files=(tests/fs/test_fs_files.py tests/fs/test_fs_namespace.py tests/fs/test_fs_attrs.py tests/fs/test_fs_tools.py)
passed=0 failed=0 bad=()
for s in "${servers[@]}"; do
  echo "== $s"
  log=$run_tmp/$s.log
  SFTPFS_TEST_SERVER=$s /usr/bin/python3 -m pytest -q -p no:cacheprovider "${files[@]}" >"$log" 2>&1
  tail -n 1 "$log"
  p=$(grep -oE '[0-9]+ passed' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
  f=$(tail -n 1 "$log" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -eq 0 ] || { bad+=("$s"); grep -E '^(FAILED|ERROR)' "$log" | sed 's/^/   /'; }
done
[ ${#bad[@]} -eq 0 ] || echo "servers with failures: ${bad[*]} (logs in $run_tmp)"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
