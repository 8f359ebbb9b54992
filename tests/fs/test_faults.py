"""A server that dies or stops answering under a mount: errors reach the application, never a short
read, an end of file or a hang, and writes the application was told about fail loudly at close.

Each test runs its own sshd (the shared one must not be killed) and mounts with a short request timeout.
"""
import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Mounter, private_sshd

FAILURE_ERRNOS = {errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNABORTED}


@pytest.fixture
def own_server(tmp_path):
    """A private sshd for one test, and a mounter bound to it; both always cleaned up."""
    with private_sshd("sftpfs-fault-") as server:
        mounter = Mounter(server, tmp_path)
        try:
            yield server, mounter
        finally:
            # Resume anything frozen so the mount can unmount cleanly and the polite stop works.
            for pid in session_pids(server.pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            mounter.close()


def session_pids(listener_pid):
    """The per-connection processes below the sshd listener, by walking /proc (children first)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [listener_pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def kill_sessions(server):
    for pid in session_pids(server.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def freeze_sessions(server):
    for pid in session_pids(server.pid):
        os.kill(pid, signal.SIGSTOP)


def make_file(path: Path, size: int):
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def test_read_after_the_server_dies_is_an_error_not_a_short_file(own_server):
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    size = 96 << 20
    make_file(remote / "big", size)
    mnt = mount(remote, options=["request_timeout=3", "noreconnect"])
    total = 0
    started = None
    with pytest.raises(OSError) as failure:
        with open(mnt / "big", "rb", buffering=0) as f:
            total += len(f.read(1 << 20))
            kill_sessions(server)
            started = time.monotonic()
            while True:
                chunk = f.read(1 << 20)
                assert chunk, f"end of file after {total} of {size} bytes: a failed read looked like EOF"
                total += len(chunk)
    assert failure.value.errno in FAILURE_ERRNOS, failure.value
    assert total < size
    assert time.monotonic() - started < 30, "the failing read took too long"
    # An ordinary tool sees the failure too: a non-zero exit, never a silently short copy.
    copy = subprocess.run(["cp", str(mnt / "big"), os.devnull], capture_output=True, timeout=60)
    assert copy.returncode != 0


def test_frozen_server_fails_reads_within_the_request_timeout(own_server):
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    (remote / "small").write_bytes(b"x" * 1000)
    mnt = mount(remote, options=["request_timeout=2", "cache=no", "noreconnect"])
    assert (mnt / "small").read_bytes() == b"x" * 1000
    freeze_sessions(server)  # no FIN, no RST: as a black-holed network looks
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        os.stat(mnt / "small")
    assert failure.value.errno in FAILURE_ERRNOS, failure.value
    assert time.monotonic() - started < 20, "the stat hung far past its deadline"


def test_writes_lost_with_the_server_fail_at_close(own_server):
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    mnt = mount(remote, options=["request_timeout=2", "noreconnect"])
    f = open(mnt / "out", "wb", buffering=0)
    try:
        f.write(b"a" * 4096)
        freeze_sessions(server)
        # Write-behind may acknowledge these at once; they can never reach the server now.
        try:
            for _ in range(16):
                f.write(b"b" * (64 << 10))
        except OSError as e:  # an earlier failure may already surface here
            assert e.errno in FAILURE_ERRNOS, e
        kill_sessions(server)
    finally:
        with pytest.raises(OSError) as failure:
            f.close()
    assert failure.value.errno in FAILURE_ERRNOS, failure.value
