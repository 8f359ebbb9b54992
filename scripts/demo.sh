#!/usr/bin/env bash
# sftpfs quick start: installs what is missing, builds sftpfs (build/release), and mounts.
#
#   sudo scripts/demo.sh
#       Serves a demo folder (/tmp/sftpfs-demo/served) through a private sshd on 127.0.0.1 and mounts it
#       at /tmp/sftpfs-demo/mnt with the sshd's generated key and known_hosts.
#   scripts/demo.sh [user@]host:[path] MOUNTPOINT [sftpfs options]
#       Builds, then mounts a real remote (as `sftpfs` would; see sftpfs --help).
#   scripts/demo.sh stop
#       Unmounts the demo and stops its sshd (by its pid file).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build/release"
sftpfs="$build/sftpfs"
demo=/tmp/sftpfs-demo
served="$demo/served"
mnt="$demo/mnt"
sshd_dir="$demo/sshd"
jobs=${SFTPFS_JOBS:-$(nproc)}

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }

is_mounted() { awk -v m="$1" '$2 == m && $3 ~ /^fuse/ { found = 1 } END { exit !found }' /proc/mounts; }

build_sftpfs() {
  "$root/scripts/install-deps.sh" || die "installing dependencies failed (run as root: sudo $0)"
  mkdir -p "$build"
  say "building sftpfs in $build ..."
  if ! { cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
         cmake --build "$build" --target sftpfs -j"$jobs"; } >"$build/build.log" 2>&1; then
    tail -n 40 "$build/build.log" >&2
    die "the build failed; the full log is $build/build.log"
  fi
}

stop_demo() {
  if is_mounted "$mnt"; then
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
    say "unmounted $mnt"
  fi
  if [ -f "$sshd_dir/sshd.pid" ]; then
    "$root/tests/support/test-sshd" stop "$sshd_dir"
    say "stopped the demo sshd"
  fi
}

populate() {
  mkdir -p "$served/docs" "$mnt"
  [ -f "$served/README.txt" ] || cat >"$served/README.txt" <<'EOF'
This folder is served by a private sshd on 127.0.0.1 and mounted through sftpfs.
Whatever you do in the mount point happens here, over SFTP.
EOF
  [ -f "$served/hello.txt" ] || echo "hello from sftpfs" >"$served/hello.txt"
  [ -f "$served/docs/notes.md" ] || printf '# notes\n\n- edit me through the mount\n' >"$served/docs/notes.md"
  [ -e "$served/latest" ] || ln -s docs/notes.md "$served/latest"
  [ -f "$served/data.bin" ] || head -c 1048576 /dev/urandom >"$served/data.bin"
}

run_demo() {
  if is_mounted "$mnt"; then
    say "already mounted at $mnt (stop it with: $0 stop)"
    exit 0
  fi
  populate
  local port
  if [ -f "$sshd_dir/sshd.pid" ] && kill -0 "$(cat "$sshd_dir/sshd.pid")" 2>/dev/null; then
    port=$(cat "$sshd_dir/port")
  else
    port=$("$root/tests/support/test-sshd" start "$sshd_dir")
  fi
  say "private sshd on 127.0.0.1 port $port serving $served"
  if ! "$sftpfs" "$(id -un)@127.0.0.1:$served" "$mnt" -p "$port" \
        -o "IdentityFile=$sshd_dir/id_ed25519" -o "UserKnownHostsFile=$sshd_dir/known_hosts" -o BatchMode=yes; then
    "$root/tests/support/test-sshd" stop "$sshd_dir"
    die "mounting failed (the message above says why)"
  fi
  echo
  ls -la "$mnt"
  echo
  say "mounted $served (over SFTP) at $mnt"
  say "try: cat $mnt/hello.txt; cp -r /etc/ssh $mnt/; ls -l $served"
  say "unmount:          fusermount3 -u $mnt"
  say "stop the sshd:    $0 stop   (unmounts too)"
}

case "${1:-}" in
  stop)
    stop_demo
    ;;
  -h|--help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  "")
    build_sftpfs
    run_demo
    ;;
  *)
    [ $# -ge 2 ] || die "usage: $0 [user@]host:[path] MOUNTPOINT [options]   (or no arguments for the local demo)"
    build_sftpfs
    exec "$sftpfs" "$@"
    ;;
esac
