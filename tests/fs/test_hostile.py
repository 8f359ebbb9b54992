"""A server that breaks the rules (tests/support/hostile-sftp-server, run by a private sshd as its sftp
subsystem): names with '/' or '..' in a listing, a listing that never ends, a reply for an id never sent,
more data than asked, status codes out of range. Each is an error or is left out: no crash, no hang, no
path outside the mount. Every test mounts afresh (each mount is a new server process)."""
import errno
import os
import struct
import time

import pytest

from conftest import Mounter, ROOT, is_mounted, private_sshd

HOSTILE = ROOT / "tests" / "support" / "hostile-sftp-server"

pytestmark = pytest.mark.openssh_only  # the hostile server runs under the suite's own sshd


@pytest.fixture(scope="module")
def hostile_sshd():
    saved = os.environ.get("TEST_SSHD_SFTP_SERVER")
    os.environ["TEST_SSHD_SFTP_SERVER"] = str(HOSTILE)
    try:
        with private_sshd("sftpfs-hostile-") as server:
            yield server
    finally:
        if saved is None:
            os.environ.pop("TEST_SSHD_SFTP_SERVER", None)
        else:
            os.environ["TEST_SSHD_SFTP_SERVER"] = saved


@pytest.fixture
def hostile(hostile_sshd, tmp_path):
    mounter = Mounter(hostile_sshd, tmp_path)
    mounts = []

    def make(options=()):
        mnt = mounter("/", options=["max_conns=1", *options])
        mounts.append(mnt)
        return mnt
    try:
        yield make
    finally:
        procs = [p for _, p in mounter.mounts]
        for mnt, proc in zip(mounts, procs):
            assert is_mounted(mnt) and proc.poll() is None, "sftpfs ended (crashed?) before the unmount"
        mounter.close()
        for proc in procs:
            assert proc.returncode == 0, f"sftpfs ended with {proc.returncode}"


def failing(call, *args):
    """The errno of call(*args), which must fail, and fail in time."""
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        call(*args)
    assert time.monotonic() - start < 60
    return info.value.errno


def test_names_with_slash_dots_nul_or_empty_are_left_out(hostile):
    mnt = hostile()
    assert sorted(os.listdir(mnt / "names")) == ["...", "..x", "ok"]
    assert os.stat(mnt / "names" / "ok").st_size == 0
    # With every entry's attributes (readdirplus, as ls -l and find use), and nothing outside.
    found = sorted((e.name, e.stat(follow_symlinks=False).st_size) for e in os.scandir(mnt / "names"))
    assert [name for name, _ in found] == ["...", "..x", "ok"]
    assert sorted(os.listdir(mnt)) == ["big", "dots", "endless", "good", "loop", "names", "short", "trailing"]


def test_a_listing_that_repeats_forever_fails(hostile):
    mnt = hostile()
    assert failing(os.listdir, mnt / "loop") == errno.EIO
    assert "names" in os.listdir(mnt)  # the mount goes on


def test_a_listing_that_never_ends_fails(hostile):
    mnt = hostile()
    assert failing(os.listdir, mnt / "endless") == errno.EIO
    assert "names" in os.listdir(mnt)


def test_a_directory_check_on_a_listing_of_dots_forever_ends(hostile):
    # RMDIR fails with FAILURE, so sftpfs looks whether the directory has entries; the listing only ever
    # has '.' and '..'.
    mnt = hostile()
    assert failing(os.rmdir, mnt / "dots") == errno.EIO


def test_more_data_than_asked_is_an_error(hostile):
    mnt = hostile()
    assert (mnt / "good").read_bytes() == b"good\n"
    assert failing((mnt / "big").read_bytes) == errno.EIO


def test_short_replies_to_reads_received_in_place_are_completed_exactly(hostile):
    """Large READs are received straight into their buffers; a reply shorter than asked (100,000 of
    255 KiB) lands at its place and the rest is asked for again, in place too."""
    mnt = hostile()
    data = (mnt / "short").read_bytes()
    assert len(data) == 1 << 20
    words = struct.unpack(f">{len(data) // 4}I", data)
    assert words == tuple(range(len(words)))


def test_a_data_reply_with_bytes_after_its_data_is_an_error(hostile):
    """The layout a DATA reply must have is checked before its bytes are received in place: one
    with trailing bytes is malformed (EIO, the connection is replaced), not silently accepted."""
    mnt = hostile()
    assert failing((mnt / "trailing").read_bytes) in (errno.EIO, errno.ENOTCONN)
    assert (mnt / "good").read_bytes() == b"good\n"


def test_readlink_with_several_names_is_an_error(hostile):
    mnt = hostile()
    assert failing(os.readlink, mnt / "manylink") == errno.EIO


@pytest.mark.parametrize("code", [0, 1, 77, 4294967295])
def test_status_codes_out_of_place_or_range_are_eio(hostile, code):
    mnt = hostile()
    assert failing(os.stat, mnt / f"status-{code}") == errno.EIO


def test_a_reply_for_an_id_never_sent_fails_the_connection_not_the_mount(hostile):
    mnt = hostile()
    assert failing(os.stat, mnt / "stray") in (errno.EIO, errno.ENOTCONN)
