"""Memory stays bounded under load and goes back down afterwards (issue 7, point 7).

Runs the RELEASE binary ($SFTPFS_RELEASE_BIN, else build/release/sftpfs; scripts/test.sh builds it):
the sanitizers of the test build multiply memory use and would measure the wrong thing.

Each test mounts afresh, takes the daemon's idle RSS, runs one load, and checks
- the peak (VmHWM, reset before the load through /proc/PID/clear_refs, and sampled RSS) stays under
  PEAK_LIMIT_MIB, and
- RSS comes back within SETTLE_MARGIN_MIB of the idle value within SETTLE_SECONDS of the load's end.
Every measurement is printed (`pytest -s` shows them): "memory: LOAD idle=.. peak=.. settled=.. after=..s".

The copy each way is SFTPFS_MEMORY_COPY_MIB (default 2048) rather than the issue's 10 GiB: on this
project's 2-core machine 10 GiB each way took 94 s in and 117 s out (3.5 minutes of the suite's 30, against
45 s for 2 GiB); memory does not grow with the length of a stream (the budgets bound what is buffered),
and 2 GiB is over twenty times either budget. SFTPFS_MEMORY_COPY_MIB=10240 runs the issue's figure (it
passed: peaks 39 MiB in, 85 MiB out). The source read off the mount is a sparse file; what is copied onto
it comes from /dev/zero (no compression is negotiated, so zeros cost what any bytes cost).
"""
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT

MIB = 1 << 20
PEAK_LIMIT_MIB = 200
SETTLE_MARGIN_MIB = 40
SETTLE_SECONDS = 15
COPY_MIB = int(os.environ.get("SFTPFS_MEMORY_COPY_MIB", "2048"))

pytestmark = pytest.mark.openssh_only


def release_binary() -> str:
    path = os.environ.get("SFTPFS_RELEASE_BIN") or str(ROOT / "build" / "release" / "sftpfs")
    if not os.access(path, os.X_OK):
        pytest.fail(f"release sftpfs not found at {path}: cmake --build build/release --target sftpfs, "
                    "or set SFTPFS_RELEASE_BIN")
    return path


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


class Sampler:
    """Samples RSS every 20 ms while a load runs; VmHWM (reset first) catches what falls between."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, status_kib(self.pid, "VmHWM") / 1024)


def mount_release(mount, monkeypatch, remote, options=()):
    monkeypatch.setenv("SFTPFS_BIN", release_binary())
    mountpoint = mount(remote, options=list(options))
    proc = mount.mounts[-1][1]
    return mountpoint, proc.pid


def idle_rss(pid, mountpoint) -> float:
    # The mount has answered a request: threads and connection are up. A stat, not a listing: reading
    # the root would read its subdirectories' listings ahead (the 100,000 entries of that test).
    os.stat(mountpoint / ".")
    time.sleep(1.0)
    return rss_mib(pid)


def measure(name, pid, idle, load, settle_seconds=SETTLE_SECONDS):
    """Runs load() and checks peak and settling; returns (peak, settled) in MiB."""
    with Sampler(pid) as sampler:
        load()
    ended = time.monotonic()
    settled = rss_mib(pid)
    while settled > idle + SETTLE_MARGIN_MIB and time.monotonic() - ended < settle_seconds:
        time.sleep(0.25)
        settled = rss_mib(pid)
    after = time.monotonic() - ended
    time.sleep(max(0.0, 5.0 - after))  # for the record: where it is once the trimmer has passed
    later = rss_mib(pid)
    print(f"\nmemory: {name} idle={idle:.1f} MiB peak={sampler.peak:.1f} MiB settled={settled:.1f} MiB "
          f"after={after:.1f}s, {later:.1f} MiB at {max(after, 5.0):.0f}s")
    assert sampler.peak < PEAK_LIMIT_MIB, f"{name}: peak RSS {sampler.peak:.1f} MiB (limit {PEAK_LIMIT_MIB})"
    assert settled <= idle + SETTLE_MARGIN_MIB, (
        f"{name}: RSS {settled:.1f} MiB {settle_seconds} s after the load, idle was {idle:.1f} MiB")
    return sampler.peak, settled


def make_file(path: Path, mib: int, seed: int):
    block = (seed.to_bytes(4, "little") + os.urandom(MIB - 4))
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)


@pytest.mark.slow
def test_64_parallel_readers(remote, mount, monkeypatch):
    for i in range(64):
        make_file(remote / f"f{i}", 8, i)
    mountpoint, pid = mount_release(mount, monkeypatch, remote)
    idle = idle_rss(pid, mountpoint)

    def read_one(i):
        total = 0
        with open(mountpoint / f"f{i}", "rb", buffering=0) as f:
            while chunk := f.read(128 * 1024):
                total += len(chunk)
        return total

    def load():
        with ThreadPoolExecutor(64) as pool:
            sizes = list(pool.map(read_one, range(64)))
        assert sizes == [8 * MIB] * 64

    measure("64 parallel readers of 8 MiB", pid, idle, load)


@pytest.mark.slow
def test_64_parallel_writers(remote, mount, monkeypatch):
    mountpoint, pid = mount_release(mount, monkeypatch, remote)
    idle = idle_rss(pid, mountpoint)
    block = os.urandom(MIB)

    def write_one(i):
        with open(mountpoint / f"w{i}", "wb", buffering=0) as f:
            for _ in range(8):
                f.write(block)

    def load():
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(write_one, range(64)))
        assert all((remote / f"w{i}").stat().st_size == 8 * MIB for i in range(64))

    measure("64 parallel writers of 8 MiB", pid, idle, load)


@pytest.mark.slow
def test_large_copy_each_way(remote, mount, monkeypatch):
    # Off the mount: a sparse source (the server reads zeros without a disk to fill).
    with open(remote / "source", "wb") as f:
        f.truncate(COPY_MIB * MIB)
    mountpoint, pid = mount_release(mount, monkeypatch, remote)
    idle = idle_rss(pid, mountpoint)

    def copy_in():
        subprocess.run(["dd", "if=/dev/zero", f"of={mountpoint}/copy", "bs=1M", f"count={COPY_MIB}",
                        "status=none"], check=True, timeout=1200)
        assert (remote / "copy").stat().st_size == COPY_MIB * MIB

    def copy_out():
        out = subprocess.run(["dd", f"if={mountpoint}/source", "of=/dev/null", "bs=1M"], check=True,
                             capture_output=True, text=True, timeout=1200)
        assert f"{COPY_MIB * MIB} bytes" in out.stderr

    try:
        start = time.monotonic()
        measure(f"copy of {COPY_MIB} MiB onto the mount", pid, idle, copy_in)
        print(f"memory: copy in took {time.monotonic() - start:.1f}s")
        (remote / "copy").unlink()
        start = time.monotonic()
        measure(f"copy of {COPY_MIB} MiB off the mount", pid, idle, copy_out)
        print(f"memory: copy out took {time.monotonic() - start:.1f}s")
    finally:
        (remote / "copy").unlink(missing_ok=True)


@pytest.mark.slow
def test_100k_entry_directory(remote, mount, monkeypatch):
    big = remote / "big"
    big.mkdir()
    for i in range(100_000):
        os.close(os.open(big / f"entry-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    mountpoint, pid = mount_release(mount, monkeypatch, remote)
    idle = idle_rss(pid, mountpoint)

    def load():
        out = subprocess.run(["ls", "-l", str(mountpoint / "big")], check=True, capture_output=True,
                             timeout=600)
        assert out.stdout.count(b"\n") == 100_001  # "total" and every entry

    # The listing and the entries' attributes are cached for their timeout (dcache_timeout, 20 s) and
    # dropped by the trimmer's next pass (every 10 s); what stays is the inode table, one node per
    # entry the kernel still holds.
    measure("ls -l of 100,000 entries", pid, idle, load, settle_seconds=35)


@pytest.mark.parametrize("budget", ["0", "1"])
def test_writes_beyond_the_write_behind_budget_all_arrive(remote, mount, budget):
    """Past the budget a write waits for its own reply instead of being acknowledged at once: with
    a budget of 0 or 1 MiB, parallel writers still write every byte (the test build, for its checks)."""
    mountpoint = mount(remote, options=[f"write_behind_budget={budget}"])
    blocks = [os.urandom(MIB) for _ in range(4)]

    def write_one(i):
        with open(mountpoint / f"w{i}", "wb") as f:
            for n in range(6):
                f.write(blocks[(i + n) % 4])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write_one, range(8)))
    for i in range(8):
        assert (remote / f"w{i}").read_bytes() == b"".join(blocks[(i + n) % 4] for n in range(6))
