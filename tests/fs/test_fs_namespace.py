"""Names through a real mount: mv, rm -r, mkdir -p, symlinks, hard links, rename flags, the errors a
local disk gives (ENOTEMPTY, EEXIST, ENAMETOOLONG), stable inode numbers, large directories."""
import os

import pytest

from test_fs_helpers import pyrun, sh


@pytest.mark.needs("posix-rename")
def test_mv_files_and_directories(mount, remote):
    # The tree is made before the mount: a name created on the server after the mount has read the
    # directory may stay hidden for negative_timeout (the negative rule), which is not what this tests.
    (remote / "a").write_text("A")
    (remote / "b").write_text("B")
    (remote / "d1").mkdir()
    (remote / "d1" / "f").write_text("f")
    (remote / "d2").mkdir()
    (remote / "empty").mkdir()
    mnt = mount(remote)
    sh(f"mv '{mnt}/a' '{mnt}/b'")  # over an existing file: atomic replace
    assert not (remote / "a").exists()
    assert (remote / "b").read_text() == "A"
    sh(f"mv '{mnt}/d1' '{mnt}/d2/'")  # into a directory
    assert (remote / "d2" / "d1" / "f").read_text() == "f"
    sh(f"mv -T '{mnt}/d2/d1' '{mnt}/empty'")  # over an empty directory
    assert (remote / "empty" / "f").read_text() == "f"
    assert sh(f"cat '{mnt}/empty/f'").stdout == "f"
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(remote)) == ["b", "d2", "empty"]


def test_rename_onto_nonempty_directory_is_enotempty(mount, remote):
    mnt = mount(remote)
    (remote / "src").mkdir()
    (remote / "dst").mkdir()
    (remote / "dst" / "keep").write_text("k")
    out = pyrun(f"""
import os
try:
    os.rename('{mnt}/src', '{mnt}/dst'); print('renamed')
except OSError as e:
    print(e.errno == __import__('errno').ENOTEMPTY)
try:
    os.rmdir('{mnt}/dst'); print('removed')
except OSError as e:
    print(e.errno == __import__('errno').ENOTEMPTY)
""")
    assert out.split() == ["True", "True"]
    assert (remote / "dst" / "keep").exists() and (remote / "src").is_dir()


def test_rename_flags(mount, remote):
    mnt = mount(remote)
    (remote / "n1").write_text("1")
    (remote / "n2").write_text("2")
    out = pyrun(f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags) == 0:
        return 'ok'
    return os.strerror(ctypes.get_errno())
print(renameat2('{mnt}/n1', '{mnt}/n2', 1))   # RENAME_NOREPLACE onto an existing name
print(renameat2('{mnt}/n1', '{mnt}/n2', 2))   # RENAME_EXCHANGE
print(renameat2('{mnt}/n1', '{mnt}/n3', 1))   # RENAME_NOREPLACE onto a free name
""")
    assert out.splitlines() == ["File exists", "Invalid argument", "ok"]
    assert (remote / "n2").read_text() == "2"
    assert (remote / "n3").read_text() == "1"
    assert not (remote / "n1").exists()


def test_rm_r_and_mkdir_p(mount, remote):
    mnt = mount(remote)
    sh(f"mkdir -p '{mnt}/a/b/c/d' && mkdir -p '{mnt}/a/b/c/d'")  # again: exists is fine for -p
    assert (remote / "a" / "b" / "c" / "d").is_dir()
    sh(f"touch '{mnt}/a/b/f1' '{mnt}/a/b/c/f2' && ln -s f1 '{mnt}/a/b/l'")
    sh(f"rm -r '{mnt}/a'")
    assert os.listdir(remote) == []
    assert os.listdir(mnt) == []


def test_mkdir_on_existing_is_eexist(mount, remote):
    mnt = mount(remote)
    (remote / "d").mkdir()
    r = sh(f"mkdir '{mnt}/d'", check=False)
    assert r.returncode != 0 and "File exists" in r.stderr


@pytest.mark.needs("readlink-relative")
def test_symlink_and_readlink(mount, remote):
    mnt = mount(remote)
    (remote / "target").write_text("T")
    sh(f"ln -s target '{mnt}/rel' && ln -s /etc/hostname '{mnt}/abs' && ln -s missing '{mnt}/dangling'")
    assert os.readlink(remote / "rel") == "target"  # OpenSSH argument order handled
    assert os.readlink(remote / "abs") == "/etc/hostname"
    assert sh(f"readlink '{mnt}/rel'").stdout.strip() == "target"
    assert sh(f"readlink '{mnt}/dangling'").stdout.strip() == "missing"
    assert sh(f"cat '{mnt}/rel'").stdout == "T"
    assert sh(f"stat -c %F '{mnt}/rel'").stdout.strip() == "symbolic link"


@pytest.mark.needs("hardlink")
def test_hard_link_count(mount, remote):
    mnt = mount(remote)
    (remote / "orig").write_text("data")
    sh(f"ln '{mnt}/orig' '{mnt}/second'")
    assert os.stat(remote / "orig").st_nlink == 2
    assert os.stat(remote / "orig").st_ino == os.stat(remote / "second").st_ino
    counts = sh(f"stat -c %h '{mnt}/orig' '{mnt}/second'").stdout.split()
    assert counts == ["2", "2"]
    # A listing carries the server's count too (ls -l through READDIR's long names).
    listing = sh(f"ls -l '{mnt}'").stdout
    assert all(line.split()[1] == "2" for line in listing.splitlines()[1:])
    sh(f"echo more >> '{mnt}/second'")
    assert (remote / "orig").read_text() == "datamore\n"


def test_inode_numbers_stable_across_rename(mount, remote):
    mnt = mount(remote)
    (remote / "d").mkdir()
    (remote / "d" / "f").write_text("x")
    out = pyrun(f"""
import os
a = os.stat('{mnt}/d/f').st_ino
d = os.stat('{mnt}/d').st_ino
os.rename('{mnt}/d', '{mnt}/e')
b = os.stat('{mnt}/e/f').st_ino
os.rename('{mnt}/e/f', '{mnt}/g')
c = os.stat('{mnt}/g').st_ino
print(a == b == c, d == os.stat('{mnt}/e').st_ino, a != d)
""")
    assert out.split() == ["True", "True", "True"]


def test_name_too_long(mount, remote):
    mnt = mount(remote)
    long_name = "n" * 256
    out = pyrun(f"""
import errno, os
results = []
for op in (lambda: os.stat('{mnt}/{long_name}'),
           lambda: open('{mnt}/{long_name}', 'w'),
           lambda: os.mkdir('{mnt}/{long_name}')):
    try:
        op(); results.append('ok')
    except OSError as e:
        results.append(errno.errorcode[e.errno])
print(' '.join(results))
""")
    assert out.split() == ["ENAMETOOLONG"] * 3
    sh(f"touch '{mnt}/{'m' * 255}'")  # 255 is allowed
    assert (remote / ("m" * 255)).exists()


def test_missing_is_enoent(mount, remote):
    mnt = mount(remote)
    r = sh(f"cat '{mnt}/nope'", check=False)
    assert r.returncode != 0 and "No such file" in r.stderr
    r = sh(f"rm '{mnt}/nope'", check=False)
    assert r.returncode != 0 and "No such file" in r.stderr


def test_large_directory_listing(mount, remote):
    """Several READDIRs in flight on one handle: every name exactly once, attributes from the listing."""
    for i in range(2500):
        (remote / f"file{i:05d}").write_bytes(b"x" * (i % 7))
    mnt = mount(remote)
    names = sh(f"ls -1 '{mnt}'").stdout.split()
    assert names == sorted(os.listdir(remote))
    assert len(names) == 2500
    sizes = sh(f"ls -l '{mnt}' | awk 'NR>1 {{print $5, $9}}'").stdout.splitlines()
    assert len(sizes) == 2500
    for line in sizes[:50]:
        size, name = line.split()
        assert int(size) == int(name[4:]) % 7
