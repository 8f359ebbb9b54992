"""Writes spread over several lanes never lose or reorder bytes.

A lane is a connection's SFTP channel (its own sftp-server and flow-control window): with max_conns=N
and max_channels=C (default 4) a long write stream also goes over extra handles on the other lanes.
SFTP orders requests only within one lane. These tests apply the same seeded random writes to a local
file and to a file on the mount and compare the bytes (on the server and through the mount) after
every fsync and close. No timing is asserted anywhere.
"""
import hashlib
import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Mounter, Proxied, private_sshd, sftpfs_binary
from fault_proxy import FaultProxy
from test_faults import FAILURE_ERRNOS, own_server, session_pids  # noqa: F401 (fixture)

MiB = 1 << 20
# Extra channels help only where one channel's 2 MiB window limits a writer, so sftpfs opens them only
# at round trips of 5 ms and more (kChannelWindowMattersRtt): the tests of channels go through the
# fault proxy with 4 ms each way.
CHANNEL_LATENCY = 0.004



class LatentMounter:
    """Mounts through a fault proxy with CHANNEL_LATENCY; closes mounts, then the proxy."""

    def __init__(self, server, workdir):
        self.proxy = FaultProxy(server.port).start()
        self.proxy.latency(CHANNEL_LATENCY)
        self.mounter = Mounter(Proxied(server, self.proxy.port), workdir)

    def __call__(self, *args, **kwargs):
        return self.mounter(*args, **kwargs)

    def close(self):
        try:
            self.mounter.close()
        finally:
            self.proxy.stop()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def read_all(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Twin:
    """One logical file: a local model and the file on the mount, written identically."""

    def __init__(self, model: Path, mounted: Path):
        self.model_fds = [os.open(model, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)]
        self.mount_fds = [os.open(mounted, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)]
        self.model_fds.append(os.open(model, os.O_RDWR))
        self.mount_fds.append(os.open(mounted, os.O_RDWR))

    def pwrite(self, which, data, offset):
        assert os.pwrite(self.model_fds[which], data, offset) == len(data)
        written = 0
        while written < len(data):
            written += os.pwrite(self.mount_fds[which], data[written:], offset + written)

    def reopen_truncated(self, which, model: Path, mounted: Path):
        """Close one handle and open the file again with O_TRUNC (the other handle's writes may be in flight)."""
        os.close(self.model_fds[which])
        os.close(self.mount_fds[which])
        self.model_fds[which] = os.open(model, os.O_RDWR | os.O_TRUNC)
        self.mount_fds[which] = os.open(mounted, os.O_RDWR | os.O_TRUNC)

    def truncate(self, which, size):
        os.ftruncate(self.model_fds[which], size)
        os.ftruncate(self.mount_fds[which], size)

    def fsync(self, which):
        os.fsync(self.model_fds[which])
        os.fsync(self.mount_fds[which])

    def pread_mount(self, which, length, offset):
        return os.pread(self.mount_fds[which], length, offset)

    def pread_model(self, length, offset):
        return os.pread(self.model_fds[0], length, offset)

    def close(self):
        for fd in self.model_fds + self.mount_fds:
            os.close(fd)


def random_ops(rng: random.Random, count: int):
    """Sequential runs, overlapping rewrites, small and large writes at random offsets, from two
    handles, with truncations, fsyncs and reads mixed in."""
    size_hint = 0
    ops = []
    for _ in range(count):
        kind = rng.choices(["run", "rewrite", "small", "big", "truncate", "fsync", "read", "reopen"],
                           weights=[3, 3, 4, 2, 1, 2, 2, 1])[0]
        which = rng.randrange(2)
        if kind == "run":  # a sequential stream long enough to be striped
            start = rng.randrange(0, max(1, size_hint)) if size_hint and rng.random() < 0.5 else size_hint
            chunk = rng.choice([128 << 10, MiB, 3 * MiB // 2])
            length = rng.randrange(9 * MiB, 14 * MiB)
            ops.append(("run", which, start, length, chunk))
            size_hint = max(size_hint, start + length)
        elif kind == "rewrite":  # overlapping what was just written, across stripe boundaries
            start = rng.randrange(0, max(1, size_hint))
            ops.append(("write", which, start, rng.randrange(1, 3 * MiB)))
            size_hint = max(size_hint, ops[-1][2] + ops[-1][3])
        elif kind == "small":
            start = rng.randrange(0, size_hint + 4096)
            ops.append(("write", which, start, rng.randrange(1, 5000)))
            size_hint = max(size_hint, ops[-1][2] + ops[-1][3])
        elif kind == "big":
            start = rng.randrange(0, size_hint + MiB)
            ops.append(("write", which, start, rng.randrange(MiB, 4 * MiB)))
            size_hint = max(size_hint, ops[-1][2] + ops[-1][3])
        elif kind == "truncate":
            size = rng.randrange(0, size_hint + MiB)
            ops.append(("truncate", which, size))
            size_hint = size
        elif kind == "fsync":
            ops.append(("fsync", which))
        elif kind == "reopen":
            ops.append(("reopen", which))
            size_hint = 0
        else:
            start = rng.randrange(0, size_hint + 1)
            ops.append(("read", which, start, rng.randrange(1, 2 * MiB)))
    ops.append(("fsync", 0))
    return ops


def channels_open(mnt: Path):
    """SFTP channels open per connection, as `sftpfs --status` shows them; and the whole status."""
    status = subprocess.run([sftpfs_binary(), "--status", str(mnt)], capture_output=True, text=True, timeout=30).stdout
    return [int(n) for n in re.findall(r"SFTP channels open (\d+) of", status)], status


def check_same(seed, step, model: Path, server_file: Path, mounted: Path):
    expected = read_all(model)
    on_server = read_all(server_file)
    assert on_server == expected, f"seed {seed}, step {step}: server bytes differ (sizes {len(on_server)} vs {len(expected)})"
    through_mount = read_all(mounted)
    assert through_mount == expected, f"seed {seed}, step {step}: bytes read through the mount differ"


LANE_LAYOUTS = {  # options, and whether the round trip is long enough for extra channels
    "three-connections": (["max_conns=3", "max_channels=1"], False),
    "four-channels": ([], True),  # the default: one connection, up to 4 channels
    "two-by-two": (["max_conns=2", "max_channels=2"], True),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout,seed", [("three-connections", int(s)) for s in
                                         os.environ.get("SFTPFS_STRIPE_SEEDS", "1,2,3").split(",")] +
                         [("four-channels", 4), ("four-channels", 5), ("two-by-two", 6)])
def test_random_writes_over_several_lanes_match_a_local_file(sshd, remote, mount, tmp_path, layout, seed):
    options, latent = LANE_LAYOUTS[layout]
    if latent:
        latent_mount = LatentMounter(sshd, tmp_path)
        try:
            mnt = latent_mount(remote, options=options + ["request_timeout=60"])
            random_writes_match(mnt, remote, tmp_path, seed)
            opened, status = channels_open(mnt)
            assert opened and max(opened) > 1, f"the writes never used an extra channel:\n{status}"
        finally:
            latent_mount.close()
    else:
        random_writes_match(mount(remote, options=options + ["request_timeout=60"]), remote, tmp_path, seed)


def random_writes_match(mnt, remote, tmp_path, seed):
    rng = random.Random(seed)
    model = tmp_path / "model"
    twin = Twin(model, mnt / "f")
    payload_rng = random.Random(seed * 7919)
    try:
        for step, op in enumerate(random_ops(rng, 60)):
            kind, which = op[0], op[1]
            if kind == "run":
                _, _, start, length, chunk = op
                pos = start
                while pos < start + length:
                    n = min(chunk, start + length - pos)
                    twin.pwrite(which, payload_rng.randbytes(n), pos)
                    pos += n
            elif kind == "write":
                _, _, start, length = op
                twin.pwrite(which, payload_rng.randbytes(length), start)
            elif kind == "truncate":
                twin.truncate(which, op[2])
            elif kind == "reopen":
                twin.reopen_truncated(which, model, mnt / "f")
                check_same(seed, step, model, remote / "f", mnt / "f")
            elif kind == "fsync":
                twin.fsync(which)
                check_same(seed, step, model, remote / "f", mnt / "f")
            else:
                _, _, start, length = op
                got = twin.pread_mount(which, length, start)
                assert got == twin.pread_model(length, start), f"seed {seed}, step {step}: read through the mount differs"
    finally:
        twin.close()
    check_same(seed, "close", model, remote / "f", mnt / "f")


def sftp_server_pids(server):
    pids = []
    for pid in session_pids(server.pid):
        try:
            if Path(f"/proc/{pid}/exe").resolve().name == "sftp-server":
                pids.append(pid)
        except OSError:
            pass
    return pids


def bytes_written_by(pid) -> int:
    """write(2) bytes of a process so far (/proc/PID/io wchar): a server's share of a stream."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError(f"no wchar for {pid}")


def test_a_large_sequential_write_uses_both_connections_and_is_exact(own_server):
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    mnt = mount(remote, options=["max_conns=2", "max_channels=1"])
    with open(mnt / "warm", "wb") as f:  # both connections are up and idle before we count
        f.write(b"x")
    servers = sftp_server_pids(server)
    assert len(servers) == 2, servers
    before = {pid: bytes_written_by(pid) for pid in servers}
    size = 96 * MiB
    h = hashlib.sha256()
    rng = random.Random(42)
    with open(mnt / "big", "wb") as f:
        for _ in range(size // MiB):
            block = rng.randbytes(MiB)
            h.update(block)
            f.write(block)
    assert sha256_of(remote / "big") == h.hexdigest()
    assert sha256_of(mnt / "big") == h.hexdigest()
    shares = {pid: bytes_written_by(pid) - before[pid] for pid in servers}
    # Each server process wrote a real part of the file (its own WRITE replies are tiny).
    assert all(share > 8 * MiB for share in shares.values()), shares
    assert sum(shares.values()) >= size, shares


def test_a_striped_write_that_loses_a_connection_fails_at_close(own_server):
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    mnt = mount(remote, options=["max_conns=2", "max_channels=1", "request_timeout=5", "noreconnect"])
    with open(mnt / "warm", "wb") as f:
        f.write(b"x")
    servers = sftp_server_pids(server)
    assert len(servers) == 2, servers
    f = open(mnt / "out", "wb", buffering=0)
    failed_early = None
    try:
        for _ in range(24):  # past the point where the stream is spread over both connections
            f.write(os.urandom(MiB))
        os.kill(servers[1], signal.SIGKILL)  # one connection's server dies; the other lives on
        try:
            for _ in range(16):
                f.write(os.urandom(MiB))
        except OSError as e:  # the failure may surface at a write already
            failed_early = e
    finally:
        with pytest.raises(OSError) as failure:
            f.close()
    if failed_early is not None:
        assert failed_early.errno in FAILURE_ERRNOS, failed_early
    assert failure.value.errno in FAILURE_ERRNOS, failure.value


def test_a_striped_write_that_loses_a_connection_is_replayed_with_reconnect(own_server):
    """The same loss with reconnect on (the default): the connection is replaced, the file reopened,
    the unconfirmed writes sent again, and the file ends byte-identical."""
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    mnt = mount(remote, options=["max_conns=2", "max_channels=1", "request_timeout=5"])
    with open(mnt / "warm", "wb") as f:
        f.write(b"x")
    servers = sftp_server_pids(server)
    assert len(servers) == 2, servers
    h = hashlib.sha256()
    with open(mnt / "out", "wb", buffering=0) as f:
        for i in range(40):
            block = os.urandom(MiB)
            h.update(block)
            f.write(block)
            if i == 24:
                os.kill(servers[1], signal.SIGKILL)  # one connection's server dies mid-stream
    assert sha256_of(remote / "out") == h.hexdigest()


def test_times_set_right_after_striped_writes_stick(mount, remote):
    """futimens on a file whose writes are still in flight on several connections (tar, cp -p), and
    utimensat by path while another handle writes: no write may land after the times and move mtime."""
    mnt = mount(remote, options=["max_conns=2"])
    stamp = 1_000_000_000
    for round_ in range(3):
        with open(mnt / "big", "wb") as f:
            for _ in range(24):  # past the 8 MiB after which writes are striped
                f.write(os.urandom(MiB))
            os.utime(f.fileno(), (stamp + round_, stamp + round_))
        assert (remote / "big").stat().st_mtime == stamp + round_, f"round {round_}"
    with open(mnt / "big", "r+b") as f:
        for _ in range(12):
            f.write(os.urandom(MiB))
        os.utime(mnt / "big", (stamp + 10, stamp + 10))
    assert (remote / "big").stat().st_mtime == stamp + 10
    assert os.stat(mnt / "big").st_mtime == stamp + 10


def write_random(path: Path, mib: int, seed: int, kill_at=None, victim=None) -> str:
    """Writes mib MiB of seeded random bytes in 1 MiB writes; kills `victim` (a pid, or a function
    returning one) after write number kill_at. Returns the SHA-256 of what was written."""
    h = hashlib.sha256()
    rng = random.Random(seed)
    with open(path, "wb", buffering=0) as f:
        for i in range(mib):
            block = rng.randbytes(MiB)
            h.update(block)
            f.write(block)
            if i == kill_at:
                os.kill(victim() if callable(victim) else victim, signal.SIGKILL)
    return h.hexdigest()


def test_a_large_write_at_default_options_goes_over_extra_channels_of_one_login(own_server):
    """OpenSSH grants each channel a 2 MiB window, so one channel carries at most 2 MiB per round
    trip: a long stream opens up to 3 more channels on the same session (no second login), each its
    own sftp-server, and spreads over them, byte-exact."""
    server, _ = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    latent_mount = LatentMounter(server, remote.parent)
    try:
        mnt = latent_mount(remote)
        with open(mnt / "warm", "wb") as f:
            f.write(b"x")
        assert len(sftp_server_pids(server)) == 1  # extra channels open only when a stream needs them
        logins_before = len(session_pids(server.pid)) - 1
        size_mib = 64
        digest = write_random(mnt / "big", size_mib, 42)
        servers = sftp_server_pids(server)
        assert len(servers) == 4, servers
        assert len(session_pids(server.pid)) - len(servers) == logins_before, "an extra channel must not be a new login"
        shares = {pid: bytes_written_by(pid) for pid in servers}
        assert all(share > 6 * MiB for share in shares.values()), shares
        assert sum(shares.values()) >= size_mib * MiB, shares
        assert sha256_of(remote / "big") == digest
        assert sha256_of(mnt / "big") == digest
        opened, status = channels_open(mnt)
        assert opened == [4], status
    finally:
        latent_mount.close()


def test_a_large_write_without_latency_stays_on_one_channel(own_server):
    """At a short round trip one channel's window is no limit, and extra channels would only cost
    CPU per byte: the stream stays on the first channel."""
    server, mount = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    mnt = mount(remote)
    digest = write_random(mnt / "big", 32, 9)
    assert sha256_of(remote / "big") == digest
    assert len(sftp_server_pids(server)) == 1


def test_an_extra_channel_whose_server_dies_is_replayed_with_reconnect(own_server):
    """One extra channel's sftp-server dies mid-stream: the connection is replaced, every handle
    reopened on its own channel, the unconfirmed writes sent again, and the file ends byte-identical."""
    server, _ = own_server
    remote = server.remote_base / "data"
    remote.mkdir()
    latent_mount = LatentMounter(server, remote.parent)
    try:
        mnt = latent_mount(remote, options=["request_timeout=5"])
        with open(mnt / "warm", "wb") as f:
            f.write(b"x")
        first = set(sftp_server_pids(server))

        def an_extra_channel():
            extra = [pid for pid in sftp_server_pids(server) if pid not in first]
            assert extra, "the stream never opened an extra channel"
            return extra[-1]

        digest = write_random(mnt / "out", 40, 7, kill_at=24, victim=an_extra_channel)
        assert sha256_of(remote / "out") == digest
        assert sha256_of(mnt / "out") == digest
    finally:
        latent_mount.close()


def test_a_server_that_refuses_extra_channels_still_gets_every_byte(tmp_path):
    """sshd with MaxSessions 1 refuses a second channel: the stream stays on the first, exact."""
    with private_sshd("sftpfs-maxsessions-", ("MaxSessions 1",)) as server:
        mounter = LatentMounter(server, tmp_path)
        try:
            remote = server.remote_base / "data"
            remote.mkdir()
            mnt = mounter(remote)
            digest = write_random(mnt / "big", 32, 3)
            assert sha256_of(remote / "big") == digest
            assert len(sftp_server_pids(server)) == 1
            opened, status = channels_open(mnt)
            assert opened == [1], status
        finally:
            mounter.close()
