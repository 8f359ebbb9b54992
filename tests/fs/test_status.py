"""`sftpfs --status MOUNTPOINT`: a running mount reports its connections, caches and memory.

The daemon answers on an abstract unix socket named after its mount point (no file to leave behind),
to its own user and root only; with nothing mounted there the command says so and exits 1.
"""
import re
import subprocess

import pytest

from conftest import sftpfs_binary

TIMEOUT = 30


def status(mountpoint, user=None):
    cmd = [sftpfs_binary(), "--status", str(mountpoint)]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def received_bytes(report: str) -> int:
    """Bytes received over every connection: "received 3.0 MiB (3145728 bytes)" or "received 603 bytes"."""
    return sum(int(exact or small) for exact, small in
               re.findall(r"received (?:[\d.]+ [KMGT]iB \((\d+) bytes\)|(\d+) bytes)", report))


def test_status_of_a_mount(mount, remote):
    (remote / "data").write_bytes(b"x" * (3 << 20))
    (remote / "sub").mkdir()
    mountpoint = mount(remote)
    before = status(mountpoint)
    assert before.returncode == 0, before.stderr
    with open(mountpoint / "data", "rb") as f:
        assert len(f.read()) == 3 << 20
    for _ in range(3):
        (mountpoint / "sub").stat()  # cached after the first: hits
    result = status(mountpoint)
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert report.startswith(f"mount {mountpoint}: root@127.0.0.1:{remote}, pid "), report
    assert re.search(r"^connection 0: connected since .*, reconnects 0, .*in flight \d+", report, re.M), report
    assert received_bytes(report) >= 3 << 20, report
    assert received_bytes(report) > received_bytes(before.stdout), report
    attributes = re.search(r"^cache attributes: ([\d.]+)% hits \((\d+) of (\d+) lookups\), (\d+) entries$", report, re.M)
    assert attributes, report
    assert int(attributes.group(2)) > 0, report
    assert re.search(r"^cache listings: ", report, re.M), report
    assert re.search(r"^cache negative: ", report, re.M), report
    assert re.search(r"^memory: [\d.]+ MiB resident; prefetched .* of 96.0 MiB; written, not yet confirmed .* of "
                     r"64.0 MiB; \d+ inodes$", report, re.M), report


def test_status_of_a_daemonized_mount_with_two_connections(mount, remote):
    mountpoint = mount(remote, options=["max_conns=2"], foreground=False)
    result = status(mountpoint)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^connection 0: connected", result.stdout, re.M), result.stdout
    assert re.search(r"^connection 1: connected", result.stdout, re.M), result.stdout
    # The trailing slash and a relative path name the same mount.
    again = subprocess.run([sftpfs_binary(), "--status", mountpoint.name + "/"], cwd=mountpoint.parent,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr


def test_no_mount_there(tmp_path, mount, remote):
    result = status(tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"sftpfs: no sftpfs mount at {tmp_path}\n"
    assert result.stdout == ""
    # Once unmounted, the name is gone with the daemon.
    mountpoint = mount(remote)
    assert status(mountpoint).returncode == 0
    mount.unmount(mountpoint)
    gone = status(mountpoint)
    assert gone.returncode == 1 and "no sftpfs mount at" in gone.stderr


def test_other_users_are_refused(mount, remote):
    mountpoint = mount(remote)
    result = status(mountpoint, user=65534)
    if result.returncode != 0 and "Permission denied" in result.stderr and "sftpfs:" not in result.stderr:
        pytest.skip("the test binary is not executable by nobody here")
    assert result.returncode == 1, result.stdout
    assert "only that user and root may see its status" in result.stderr
    assert result.stdout == ""
