"""Attributes read back at flush (issue 9): closing a written file asks the server for its attributes
behind the writes, in the round trip the close waits for anyway, and keeps them, so the stat a tool
makes right after close (rsync's lstat, make's stat of what it just wrote) sends nothing. Each test
checks that what the mount shows is still what the server has: after a later change through the
mount, through another handle of the file, or by another client once the cache timeout passed.

The server logs every request (bench/sftp-logger), so the tests count the stats that reached it."""
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import Mounter, Proxied
from fault_proxy import FaultProxy
from logged_sshd import data, logged_sshd  # noqa: F401 (data: a fixture)

pytestmark = pytest.mark.openssh_only

CACHE = 2.0  # cache_timeout of these mounts, seconds


@pytest.fixture(scope="module")
def logged():
    with logged_sshd("sftpfs-read-back-") as server:
        yield server


@pytest.fixture
def mnt(logged, data, tmp_path):
    m = Mounter(logged.server, tmp_path)
    try:
        yield m(data, options=[f"cache_timeout={CACHE:g}"])
    finally:
        m.close()


def stats(logged, path) -> int:
    return logged.count("lstat", path) + logged.count("stat", path)


def same_as_server(mounted: Path, remote: Path):
    seen, real = os.stat(mounted), os.stat(remote)
    assert (seen.st_size, seen.st_mtime_ns // 10**9, seen.st_mode) == (real.st_size, real.st_mtime_ns // 10**9, real.st_mode)


def test_stat_after_close_sends_nothing_and_shows_the_server(logged, data, mnt):
    for i in range(5):
        with open(mnt / f"f{i}", "wb") as f:
            f.write(b"x" * (1000 * (i + 1)))
    before = [stats(logged, data / f"f{i}") for i in range(5)]
    for i in range(5):
        st = os.lstat(mnt / f"f{i}")
        assert st.st_size == 1000 * (i + 1)
        same_as_server(mnt / f"f{i}", data / f"f{i}")
    assert [stats(logged, data / f"f{i}") for i in range(5)] == before


def test_a_stat_between_write_and_close_is_the_read_back(logged, data, mnt):
    # git's checkout: open(O_CREAT|O_EXCL), write, fstat (for the index), close, and later lstat.
    for i in range(3):
        fd = os.open(mnt / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        before = stats(logged, data / f"f{i}"), logged.count("fstat", data / f"f{i}")
        try:
            os.write(fd, b"y" * (3000 + i))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        after_close = os.lstat(mnt / f"f{i}")
        # One FSTAT behind the write answers the fstat; the close and the lstat after it send nothing.
        assert (stats(logged, data / f"f{i}"), logged.count("fstat", data / f"f{i}")) == (before[0], before[1] + 1)
        real = os.stat(data / f"f{i}")
        assert st.st_size == after_close.st_size == real.st_size == 3000 + i
        assert int(st.st_mtime) == int(after_close.st_mtime) == int(real.st_mtime)


def test_a_rewrite_of_an_existing_file_is_read_back_too(logged, data, mnt):
    (data / "old").write_bytes(b"o" * 5000)
    os.utime(data / "old", (1000000000, 1000000000))
    with open(mnt / "old", "r+b") as f:
        f.write(b"new")
    before = stats(logged, data / "old")
    st = os.stat(mnt / "old")
    assert stats(logged, data / "old") == before
    assert st.st_size == 5000 and st.st_mtime > 1000000000   # the server moved mtime; so does the mount
    same_as_server(mnt / "old", data / "old")


def test_changes_through_the_mount_after_close_show(logged, data, mnt):
    with open(mnt / "f", "wb") as f:
        f.write(b"first version\n")
    os.stat(mnt / "f")
    os.utime(mnt / "f", (1100000000, 1200000000))      # rsync sets the times after close
    os.chmod(mnt / "f", 0o600)
    assert int(os.stat(mnt / "f").st_mtime) == 1200000000
    assert os.stat(mnt / "f").st_mode & 0o777 == 0o600
    with open(mnt / "f", "ab") as f:
        f.write(b"appended\n")
    assert os.stat(mnt / "f").st_size == len(b"first version\nappended\n")
    os.truncate(mnt / "f", 5)
    assert os.stat(mnt / "f").st_size == 5
    same_as_server(mnt / "f", data / "f")
    assert (mnt / "f").read_bytes() == b"first"


def test_a_second_handle_writing_after_the_first_closed_is_not_masked(logged, data, mnt):
    a = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    b = os.open(mnt / "f", os.O_WRONLY)
    try:
        os.write(a, b"a" * 10)
        os.close(a)                      # reads back a 10-byte file
        a = -1
        os.pwrite(b, b"b" * 10, 10)      # answered before the server: the mount must show 20 anyway
        assert os.stat(mnt / "f").st_size == 20
    finally:
        if a >= 0:
            os.close(a)
        os.close(b)
    assert os.stat(mnt / "f").st_size == 20
    same_as_server(mnt / "f", data / "f")
    assert (data / "f").read_bytes() == b"a" * 10 + b"b" * 10


def test_another_clients_change_after_close_shows_once_the_cache_timeout_passed(logged, data, mnt):
    with open(mnt / "f", "wb") as f:
        f.write(b"mine\n")
    assert os.stat(mnt / "f").st_size == 5
    with open(data / "f", "ab") as f:     # another client, straight on the server's disk
        f.write(b"theirs\n")
    time.sleep(CACHE + 0.5)
    assert os.stat(mnt / "f").st_size == 12
    assert (mnt / "f").read_bytes() == b"mine\ntheirs\n"


def test_without_the_cache_every_stat_asks_the_server(logged, data, tmp_path):
    m = Mounter(logged.server, tmp_path)
    try:
        mnt = m(data, options=["cache=no"])
        with open(mnt / "f", "wb") as f:
            f.write(b"data\n")
        before = stats(logged, data / "f")
        os.stat(mnt / "f")
        os.stat(mnt / "f")
        assert stats(logged, data / "f") > before
        same_as_server(mnt / "f", data / "f")
    finally:
        m.close()


def test_a_change_made_while_the_read_back_is_in_flight_wins(logged, data, tmp_path):
    # 200 ms a round trip: a's close waits for its read-back while b's fchmod (answered at once, the
    # file being b's creation) changes the mode; the read-back, asked before, must not be kept.
    with FaultProxy(logged.server.port) as proxy:
        proxy.latency(0.1)
        m = Mounter(Proxied(logged.server, proxy.port), tmp_path)
        try:
            mnt = m(data, options=[f"cache_timeout={CACHE:g}"])
            b = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            a = os.open(mnt / "f", os.O_WRONLY)
            try:
                os.write(a, b"data\n")
                closing = threading.Thread(target=os.close, args=(a,))
                closing.start()
                time.sleep(0.05)
                os.fchmod(b, 0o600)
                closing.join()
                # A write makes the kernel ask the mount again: its cache must hold the change.
                os.write(b, b"more\n")
                assert os.stat(mnt / "f").st_mode & 0o777 == 0o600
            finally:
                os.close(b)
            assert os.stat(mnt / "f").st_mode & 0o777 == 0o600
            same_as_server(mnt / "f", data / "f")
        finally:
            m.close()


def test_a_directory_stat_after_a_create_in_it_sends_nothing_and_shows_the_server(logged, data, mnt):
    # unzip stats the directory before each file it writes into it.
    (data / "d").mkdir()
    os.stat(mnt / "d")
    for i in range(3):
        with open(mnt / "d" / f"f{i}", "wb") as f:
            f.write(b"z" * 100)
        before = stats(logged, data / "d")
        st = os.stat(mnt / "d")
        assert stats(logged, data / "d") == before
        real = os.stat(data / "d")
        assert (st.st_mtime_ns // 10**9, st.st_size, st.st_mode) == (real.st_mtime_ns // 10**9, real.st_size, real.st_mode)
    # A removal through the mount, and another client's create once the cache timeout passed, show.
    os.unlink(mnt / "d" / "f0")
    assert os.stat(mnt / "d").st_size == os.stat(data / "d").st_size
    time.sleep(1.1)   # the server's mtime, in seconds, moves
    (data / "d" / "theirs").write_bytes(b"x")
    time.sleep(CACHE + 0.5)
    st, real = os.stat(mnt / "d"), os.stat(data / "d")
    assert (int(st.st_mtime), st.st_size) == (int(real.st_mtime), real.st_size)
