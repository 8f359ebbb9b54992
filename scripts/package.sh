#!/usr/bin/env bash
# Builds the Debian package into build/package/ (sftpfs_VERSION_ARCH.deb) with the standard Debian tools,
# dpkg-buildpackage and debhelper, and checks it with lintian (an error fails).
#
#   bash scripts/package.sh
#
# The working tree as it is (what .gitignore does not exclude, build/ left out) is copied into
# build/package/sftpfs-VERSION/, and packaging/debian/ into it as debian/. That copy keeps its build
# directory (obj/) between runs, so a second run compiles only what changed. The package build is a
# release build without the tests (scripts/test.sh runs them); it runs nice'd, with 2 jobs at most.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build/package

bash scripts/install-deps.sh

version=$(sed -n 's/^project(sftpfs VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
changelog_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
if [ "$version" != "$changelog_version" ]; then
  echo "package.sh: CMakeLists.txt says version $version, packaging/debian/changelog $changelog_version:" \
       "add a changelog entry" >&2
  exit 1
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
src=$out/sftpfs-$version
mkdir -p "$src"

# The sources. P(rotect): the build directory and debian/ are not the tree's and survive --delete.
rsync -a --delete --filter='P /obj/' --filter='P /debian/' --exclude=/obj/ --exclude=/debian/ \
      --exclude=/build/ --exclude=/.git --filter=':- .gitignore' "$root/" "$src/"
rsync -a --delete "$root/packaging/debian/" "$src/debian/"
rm -f "$out"/sftpfs_"$version"_* "$out"/sftpfs-dbgsym_"$version"_*

echo "package.sh: building sftpfs $version in $src (log: $out/build.log)"
# -b: binary package only; -us -uc: unsigned; -nc: no clean first, so obj/ is reused.
if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=2 nocheck noddebs" nice -n 10 \
        dpkg-buildpackage -b -us -uc -nc >"$out/build.log" 2>&1); then
  grep -v '^\[[0-9]*/[0-9]*\]' "$out/build.log" | tail -n 40 >&2
  echo "package.sh: dpkg-buildpackage failed (log: $out/build.log)" >&2
  exit 1
fi
deb=$out/sftpfs_${version}_${arch}.deb
[ -f "$deb" ] || { echo "package.sh: $deb was not made" >&2; exit 1; }

echo "package.sh: lintian $deb"
# Errors fail; warnings and notes are shown. (lintian remarks when run as root, as CI runs it.)
lintian_rc=0
lintian --fail-on error --display-info "$deb" >"$out/lintian.log" 2>&1 || lintian_rc=$?
grep -v 'running with root privileges' "$out/lintian.log" || true
if [ "$lintian_rc" -ne 0 ]; then
  echo "package.sh: lintian found errors (above)" >&2
  exit 1
fi
echo "package.sh: $deb"
