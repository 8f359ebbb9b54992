"""Read prefetching through a real mount: sequential, random and mixed reads return exactly the server's
bytes, the end of file is exact at awkward sizes, and prefetched bytes are never served once the file
changed (written through the mount, truncated, or changed on the server). direct_io makes every
application read reach the filesystem, so the kernel's page cache cannot hide a stale answer."""
import os

import pytest

from test_fs_helpers import make_file, pyrun, sh, sha256_local, sha256_mounted

SEGMENT = 4 * 255 * 1024  # the prefetcher's fetch size


@pytest.mark.parametrize("options", [(), ("direct_io",)])
@pytest.mark.parametrize("size", [SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 777, 20 << 20])
def test_sequential_read_exact(mount, remote, size, options):
    make_file(remote / "f", size, seed=size)
    mnt = mount(remote, options=options)
    assert sha256_mounted(mnt / "f") == sha256_local(remote / "f")
    # Odd-sized application reads, through Python.
    out = pyrun(f"""
import hashlib
h = hashlib.sha256(); n = 0
with open('{mnt}/f', 'rb', buffering=0) as f:
    while True:
        b = f.read(100001)
        if not b: break
        h.update(b); n += len(b)
print(n, h.hexdigest())
""")
    n, digest = out.split()
    assert int(n) == size and digest == sha256_local(remote / "f")


def test_mixed_random_and_sequential_reads(mount, remote):
    make_file(remote / "f", 12 << 20, seed=3)
    data = (remote / "f").read_bytes()
    mnt = mount(remote, options=("direct_io",))
    out = pyrun(f"""
import random
data = open('{remote}/f', 'rb').read()
rng = random.Random(5)
with open('{mnt}/f', 'rb', buffering=0) as f:
    pos = 0
    for step in range(400):
        if rng.random() < 0.3:
            pos = rng.randrange(0, len(data) + 1000)
        size = rng.choice([1, 4096, 65536, 131072, 300000])
        f.seek(pos)
        got = f.read(size)
        assert got == data[pos:pos + size], (step, pos, size, len(got))
        pos += len(got)
print("ok")
""")
    assert out.strip() == "ok"
    assert len(data) == 12 << 20


def test_write_through_another_handle_is_seen(mount, remote):
    make_file(remote / "f", 8 << 20, seed=9)
    mnt = mount(remote, options=("direct_io",))
    out = pyrun(f"""
import os
r = os.open('{mnt}/f', os.O_RDONLY)
w = os.open('{mnt}/f', os.O_WRONLY)
first = os.pread(r, 1 << 20, 0)          # starts a sequential stream: bytes ahead are prefetched
os.pread(r, 1 << 20, 1 << 20)
os.pwrite(w, b'X' * 100000, 3 << 20)     # inside what was prefetched
os.fsync(w)
got = os.pread(r, 200000, (3 << 20) - 50000)
assert got[50000:150000] == b'X' * 100000, 'stale prefetched bytes served after a write'
os.ftruncate(w, (3 << 20) + 10)          # truncation through the mount
got = os.pread(r, 1 << 20, 3 << 20)
assert got == b'X' * 10, ('stale bytes after truncation', len(got))
print('ok')
""")
    assert out.strip() == "ok"


def test_change_on_the_server_is_seen_when_attributes_change(mount, remote):
    make_file(remote / "f", 8 << 20, seed=11)
    # Strictly coherent: every stat asks the server, so the change is noticed at the next fstat.
    mnt = mount(remote, options=("direct_io", "dir_cache=no"))
    out = pyrun(f"""
import os
r = os.open('{mnt}/f', os.O_RDONLY)
os.pread(r, 1 << 20, 0)
os.pread(r, 1 << 20, 1 << 20)
with open('{remote}/f', 'r+b') as s:      # another client rewrites bytes ahead of the reader
    s.seek(3 << 20); s.write(b'Y' * 4096)
st = os.stat('{remote}/f')
os.utime('{remote}/f', (st.st_atime, st.st_mtime + 100))
os.fstat(r)                               # the new mtime arrives
got = os.pread(r, 4096, 3 << 20)
assert got == b'Y' * 4096, 'stale prefetched bytes served after a change on the server'
print('ok')
""")
    assert out.strip() == "ok"


def test_file_grown_on_the_server_after_end_of_file(mount, remote):
    (remote / "f").write_bytes(b"a" * 5000)
    mnt = mount(remote, options=("direct_io", "dir_cache=no"))
    out = pyrun(f"""
import os
r = os.open('{mnt}/f', os.O_RDONLY)
assert os.read(r, 1 << 20) == b'a' * 5000
assert os.read(r, 1 << 20) == b''
with open('{remote}/f', 'ab') as s:
    s.write(b'b' * 3000)
assert os.read(r, 1 << 20) == b'b' * 3000, 'end of file remembered after the file grew'
print('ok')
""")
    assert out.strip() == "ok"


def test_many_concurrent_sequential_readers(mount, remote):
    for i in range(6):
        make_file(remote / f"f{i}", 6 << 20, seed=100 + i)
    mnt = mount(remote)
    sums = sh(f"cd '{mnt}' && for i in 0 1 2 3 4 5; do sha256sum f$i & done; wait").stdout
    got = {line.split()[1]: line.split()[0] for line in sums.strip().splitlines()}
    for i in range(6):
        assert got[f"f{i}"] == sha256_local(remote / f"f{i}")
    assert os.path.getsize(remote / "f0") == 6 << 20


def test_long_read_striped_over_two_connections(mount, remote):
    make_file(remote / "f", 40 << 20, seed=21)
    mnt = mount(remote, options=("max_conns=2",))
    assert sha256_mounted(mnt / "f") == sha256_local(remote / "f")
    # Written through the mount, then read back at once: never the old bytes from the other connection.
    out = pyrun(f"""
import os
fd = os.open('{mnt}/f', os.O_RDWR)
for i in range(0, 40 << 20, 1 << 20):
    os.pwrite(fd, bytes([i >> 20 & 0xff]) * (1 << 20), i)
os.close(fd)
with open('{mnt}/f', 'rb') as f:
    for i in range(0, 40 << 20, 1 << 20):
        assert f.read(1 << 20) == bytes([i >> 20 & 0xff]) * (1 << 20), i
print('ok')
""")
    assert out.strip() == "ok"
