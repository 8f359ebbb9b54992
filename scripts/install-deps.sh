#!/usr/bin/env bash
# Installs every package sftpfs needs to build, test and benchmark on Debian 12.
# Quiet and quick when everything is already present.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  libssh2-1-dev libssl-dev libfuse3-dev fuse3 libboost-program-options-dev
  # unit tests, fuzzing, sanitizers
  googletest libgtest-dev libgmock-dev clang-14 libclang-rt-14-dev
  # integration tests: a private sshd, ordinary tools used on the mount
  openssh-server openssh-client openssh-sftp-server rsync tar coreutils findutils python3 python3-pytest
  procps psmisc util-linux sudo
  # mount(8) and systemd tests: the fstab generator and `systemd --test`
  mount systemd
  # the Debian package (scripts/package.sh) and its test: build it, check it, read its manual pages
  dpkg-dev debhelper lintian rsync man-db groff-base
  # other SFTP servers the suite runs against (tests/servers): gesftpserver, proftpd mod_sftp, rclone,
  # asyncssh and paramiko (Python servers), dropbear running OpenSSH's sftp-server
  gesftpserver proftpd-core proftpd-mod-crypto rclone python3-asyncssh python3-paramiko dropbear-bin
  # benchmarks: sshfs to compare against, fio for random reads
  sshfs fio
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or with sudo) to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
