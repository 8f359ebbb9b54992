"""File data through a real mount: copies byte-identical both ways, truncation, appends, unlink of an
open file, an editor's save, server-side copy. Results are checked on the server side (a local path)."""
import os

import pytest

from test_fs_helpers import make_file, pyrun, sh, sha256_local, sha256_mounted

SIZES = [0, 1, 4095, 4096, 4097, 1 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_copy_in_and_out_identical(mount, remote, tmp_path, size):
    mnt = mount(remote)
    src = tmp_path / "src.bin"
    make_file(src, size, seed=size)
    sh(f"cp '{src}' '{mnt}/f.bin'")
    assert sha256_local(remote / "f.bin") == sha256_local(src)
    assert os.path.getsize(remote / "f.bin") == size
    assert sha256_mounted(mnt / "f.bin") == sha256_local(src)
    sh(f"cp '{mnt}/f.bin' '{tmp_path}/out.bin'")
    assert sha256_local(tmp_path / "out.bin") == sha256_local(src)


@pytest.mark.slow
def test_copy_1gib_identical(mount, remote, tmp_path):
    mnt = mount(remote)
    src = tmp_path / "big.bin"
    make_file(src, 1 << 30, seed=7)
    expected = sha256_local(src)
    sh(f"cp '{src}' '{mnt}/big.bin'", timeout=900)
    assert os.path.getsize(remote / "big.bin") == 1 << 30
    assert sha256_local(remote / "big.bin") == expected
    src.unlink()
    sh(f"cp '{mnt}/big.bin' '{tmp_path}/out.bin'", timeout=900)
    assert sha256_local(tmp_path / "out.bin") == expected


@pytest.mark.needs("truncate")
def test_truncate_up_and_down(mount, remote):
    mnt = mount(remote)
    (remote / "t").write_bytes(b"0123456789")
    sh(f"truncate -s 100000 '{mnt}/t'")
    assert os.path.getsize(remote / "t") == 100000
    data = (remote / "t").read_bytes()
    assert data[:10] == b"0123456789" and data[10:] == bytes(100000 - 10)
    sh(f"truncate -s 3 '{mnt}/t'")
    assert (remote / "t").read_bytes() == b"012"
    assert sh(f"stat -c %s '{mnt}/t'").stdout.strip() == "3"
    sh(f"truncate -s 0 '{mnt}/t'")
    assert (remote / "t").read_bytes() == b""


def test_shell_append(mount, remote):
    mnt = mount(remote)
    sh(f"echo one > '{mnt}/log'; echo two >> '{mnt}/log'; printf three >> '{mnt}/log'")
    assert (remote / "log").read_bytes() == b"one\ntwo\nthree"
    assert sh(f"cat '{mnt}/log'").stdout == "one\ntwo\nthree"


def test_o_append_goes_to_the_real_end(mount, remote):
    """Servers ignore the append flag; we must write at the end even when the file grew elsewhere."""
    mnt = mount(remote)
    (remote / "a").write_bytes(b"12345")
    out = pyrun(f"""
import os
fd = os.open('{mnt}/a', os.O_WRONLY | os.O_APPEND)
open('{remote}/a', 'ab').write(b'SERVER')   # another writer, straight on the server, after our open
os.write(fd, b'X')
os.write(fd, b'Y')
os.close(fd)
print('ok')
""")
    assert out.strip() == "ok"
    # Our writes go where the end was at open plus what we wrote: after the bytes we knew of. The
    # server-side writer's bytes stay intact where they are not overwritten.
    data = (remote / "a").read_bytes()
    assert data.startswith(b"12345")
    assert b"X" in data and b"Y" in data
    assert data.index(b"Y") == data.index(b"X") + 1


def test_unlink_of_open_file(mount, remote):
    mnt = mount(remote)
    out = pyrun(f"""
import os
fd = os.open('{mnt}/u', os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b'hello')
os.unlink('{mnt}/u')
print(os.path.exists('{mnt}/u'), sorted(os.listdir('{remote}')))
os.write(fd, b' world')
os.lseek(fd, 0, 0)
print(os.read(fd, 100).decode(), os.fstat(fd).st_size)
os.close(fd)
print(sorted(os.listdir('{remote}')), sorted(os.listdir('{mnt}')))
""")
    lines = out.splitlines()
    assert lines[0] == "False []"          # gone at once, nothing hidden left on the server
    assert lines[1] == "hello world 11"    # the open file keeps working
    assert lines[2] == "[] []"


def test_editor_style_save(mount, remote):
    """write a temp file, fsync, rename over the original: the new content replaces the old atomically."""
    mnt = mount(remote)
    (remote / "doc.txt").write_text("old\n")
    out = pyrun(f"""
import os
before = os.stat('{mnt}/doc.txt').st_ino
fd = os.open('{mnt}/.doc.txt.swp', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
os.write(fd, b'new content\\n')
os.fsync(fd)
os.close(fd)
os.rename('{mnt}/.doc.txt.swp', '{mnt}/doc.txt')
print(open('{mnt}/doc.txt').read().strip(), os.stat('{mnt}/doc.txt').st_ino != before)
""")
    assert out.split() == ["new", "content", "True"]
    assert (remote / "doc.txt").read_text() == "new content\n"
    assert sorted(p.name for p in remote.iterdir()) == ["doc.txt"]


def test_write_then_read_same_handle_and_sizes(mount, remote):
    """Write-behind never shows a short file: sizes reported while writes are in flight include them."""
    mnt = mount(remote)
    out = pyrun(f"""
import os
fd = os.open('{mnt}/w', os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
block = bytes(range(256)) * 4096  # 1 MiB
for i in range(8):
    os.write(fd, block)
    assert os.fstat(fd).st_size == (i + 1) * len(block), os.fstat(fd).st_size
os.lseek(fd, 0, 0)
data = b''
while True:
    chunk = os.read(fd, 1 << 20)
    if not chunk: break
    data += chunk
assert data == block * 8, len(data)
os.close(fd)
print('ok')
""")
    assert out.strip() == "ok"
    assert os.path.getsize(remote / "w") == 8 << 20


def test_copy_within_mount(mount, remote, tmp_path):
    """cp inside the mount (copy_file_range -> copy-data on OpenSSH) copies exactly."""
    mnt = mount(remote)
    make_file(remote / "src", 3 * (1 << 20) + 17, seed=3)
    sh(f"cp '{mnt}/src' '{mnt}/dst'")
    assert sha256_local(remote / "dst") == sha256_local(remote / "src")
    out = pyrun(f"""
import os
src = os.open('{mnt}/src', os.O_RDONLY)
dst = os.open('{mnt}/part', os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
n = os.copy_file_range(src, dst, 1000, 10)                 # count, source offset
m = os.copy_file_range(src, dst, 3 * (1 << 20), 1010)     # asks past the end: only what is there
os.close(src); os.close(dst)
print(n, m)
""")
    n, m = map(int, out.split())
    assert n == 1000
    assert m == 3 * (1 << 20) + 17 - 1010
    assert (remote / "part").read_bytes() == (remote / "src").read_bytes()[10:]


def test_create_exclusive(mount, remote):
    mnt = mount(remote)
    (remote / "exists").write_text("x")
    out = pyrun(f"""
import os, errno
try:
    os.open('{mnt}/exists', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    print('created')
except FileExistsError:
    print('EEXIST')
fd = os.open('{mnt}/new', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
os.close(fd)
print(oct(os.stat('{mnt}/new').st_mode & 0o777))
""")
    assert out.split() == ["EEXIST", "0o640"]
    assert (remote / "exists").read_text() == "x"
    assert (os.stat(remote / "new").st_mode & 0o777) == 0o640
