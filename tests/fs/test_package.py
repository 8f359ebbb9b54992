"""The Debian package: `bash scripts/package.sh` builds it (lintian without errors), it installs, mounts
through `mount -t sftpfs` and through an fstab line (`mount -T`), unmounts, and purging it leaves nothing
behind.

The package puts /usr/bin/sftpfs and /sbin/mount.sftpfs on this machine for the length of one test, under
the lock the mount-helper tests hold while they link /sbin/mount.sftpfs to a build's copy. The package
build reuses build/package/ between runs (only what changed is compiled again).
"""
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HELPER_LOCK, ROOT, is_mounted, machine_lock
from test_cli import clean_env, processes_mentioning
from test_mount_helper import cleanup, mounted_entry, ssh_options, unmount, write_fstab

BUILD_TIMEOUT = 1800


@pytest.fixture(scope="module")
def deb():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    path = Path(result.stdout.strip().splitlines()[-1].removeprefix("package.sh: "))
    assert path.is_file() and path.suffix == ".deb", result.stdout
    return path


def dpkg(*args, timeout=300):
    """dpkg, waiting while another dpkg or apt (someone's install-deps.sh) holds the lock."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode == 0 or "lock" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


def installed() -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "sftpfs"], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout not in ("", "not-installed")


def known_to_dpkg() -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "sftpfs"], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() not in ("", "un")


def package_paths(deb: Path) -> list[Path]:
    """The files, links and directories the package holds, as absolute paths."""
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    names = subprocess.run(["tar", "-t"], input=listing, capture_output=True, check=True).stdout.decode().split()
    return [Path("/" + name.removeprefix("./").rstrip("/")) for name in names if name not in ("./", ".")]


def test_lintian_has_no_errors(deb):
    log = (deb.parent / "lintian.log").read_text()
    assert not [line for line in log.splitlines() if line.startswith("E:")], log


def test_package_installs_mounts_and_purges_leaving_nothing(deb, sshd, remote, tmp_path):
    (remote / "hello.txt").write_text("from the package\n")
    paths = package_paths(deb)
    for expected in ("/usr/bin/sftpfs", "/sbin/mount.sftpfs", "/sbin/mount.fuse.sftpfs",
                     "/usr/share/man/man1/sftpfs.1.gz", "/usr/share/man/man8/mount.sftpfs.8.gz",
                     "/usr/share/man/man8/mount.fuse.sftpfs.8.gz", "/usr/share/doc/sftpfs/examples/mnt-srv.mount",
                     "/usr/share/doc/sftpfs/examples/mnt-srv.automount", "/usr/share/doc/sftpfs/examples/fstab"):
        assert Path(expected) in paths, f"{expected} is not in the package: {paths}"
    assert any(str(p).startswith("/usr/share/doc/sftpfs/README") for p in paths), paths
    # What the package owns alone: every file and link, and its own directories (not /usr/bin, ...).
    own = [p for p in paths if "sftpfs" in str(p)]
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = clean_env(tmp_path / "home")
    with machine_lock(HELPER_LOCK):
        if known_to_dpkg():
            pytest.fail("the sftpfs package is installed on this machine: remove it (dpkg --purge sftpfs) to run "
                        "this test")
        for path in own:
            assert not os.path.lexists(path), f"{path} exists before the package is installed"
        purged = None
        try:
            # Minimal images exclude documentation (dpkg.cfg.d path-exclude); the pages are part of the test.
            result = dpkg("--path-include=/usr/share/man/*", "--path-include=/usr/share/doc/sftpfs/*", "-i", str(deb))
            assert result.returncode == 0, result.stdout + result.stderr
            assert installed()
            version = subprocess.run(["sftpfs", "--version"], capture_output=True, text=True, env=env)
            assert version.returncode == 0 and version.stdout.strip(), version
            assert os.readlink("/sbin/mount.fuse.sftpfs") == "mount.sftpfs"
            man = subprocess.run(["man", "-w", "8", "mount.fuse.sftpfs"], capture_output=True, text=True)
            assert man.returncode == 0 and man.stdout.strip().endswith("mount.sftpfs.8.gz"), man
            page = subprocess.run(["man", "-P", "cat", "8", "mount.sftpfs"], capture_output=True, text=True,
                                  env={**env, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"})
            assert page.returncode == 0 and "default_permissions" in page.stdout, page.stderr

            # mount -t sftpfs: mount(8) -> /sbin/mount.sftpfs -> /usr/bin/sftpfs.
            source = f"root@127.0.0.1:{remote}"
            result = subprocess.run(["mount", "-t", "sftpfs", source, str(mountpoint), "-o", ssh_options(sshd)],
                                    capture_output=True, text=True, timeout=60, env=env)
            assert result.returncode == 0, result.stderr
            assert (mountpoint / "hello.txt").read_text() == "from the package\n"
            daemons = processes_mentioning(str(mountpoint))
            assert [os.readlink(f"/proc/{pid}/exe") for pid in daemons] == ["/usr/bin/sftpfs"]
            unmount(mountpoint)

            # An fstab line of type fuse.sftpfs (mount.fuse.sftpfs), with the words mount and systemd use.
            fstab = write_fstab(tmp_path / "fstab", f"{source} {mountpoint} fuse.sftpfs noauto,_netdev,nofail,"
                                f"x-systemd.automount,{ssh_options(sshd)},allow_other,default_permissions 0 0")
            result = subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], capture_output=True, text=True,
                                    timeout=60, env=env)
            assert result.returncode == 0, result.stderr
            assert "allow_other" in mounted_entry(mountpoint)[3] and "default_permissions" in mounted_entry(mountpoint)[3]
            (mountpoint / "written.txt").write_text("through fstab\n")
            assert (remote / "written.txt").read_text() == "through fstab\n"
            unmount(mountpoint)
        finally:
            cleanup(mountpoint)
            if known_to_dpkg():
                purged = dpkg("--purge", "sftpfs")
        assert purged is not None and purged.returncode == 0, purged and purged.stdout + purged.stderr

    # Nothing left: not known to dpkg, none of its paths, no mount, no process.
    assert not known_to_dpkg()
    left = [str(p) for p in own if os.path.lexists(p)]
    assert not left, f"left behind: {left}"
    assert not list(Path("/var/lib/dpkg/info").glob("sftpfs.*"))
    assert not is_mounted(mountpoint) and not processes_mentioning(str(mountpoint))
