"""Attributes through a real mount: chmod, chown as root, touch -d/-a/-m (the other time kept), times
SFTP v3 cannot carry refused, lchown on the link itself (lsetstat)."""
import os

import pytest

from test_fs_helpers import pyrun, sh


def test_chmod(mount, remote):
    mnt = mount(remote)
    (remote / "f").write_text("x")
    (remote / "d").mkdir()
    sh(f"chmod 640 '{mnt}/f' && chmod 711 '{mnt}/d' && chmod u+s '{mnt}/f'")
    assert os.stat(remote / "f").st_mode & 0o7777 == 0o4640
    assert os.stat(remote / "d").st_mode & 0o7777 == 0o711
    assert sh(f"stat -c %a '{mnt}/f' '{mnt}/d'").stdout.split() == ["4640", "711"]


def test_chown_as_root(mount, remote):
    mnt = mount(remote)
    (remote / "f").write_text("x")
    sh(f"chown 1234:2345 '{mnt}/f'")
    st = os.stat(remote / "f")
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    sh(f"chgrp 77 '{mnt}/f'")  # half an owner: the uid is kept
    st = os.stat(remote / "f")
    assert (st.st_uid, st.st_gid) == (1234, 77)
    assert sh(f"stat -c '%u %g' '{mnt}/f'").stdout.split() == ["1234", "77"]


def test_touch_times(mount, remote):
    mnt = mount(remote)
    (remote / "f").write_text("x")
    sh(f"touch -d '2001-02-03 04:05:06 UTC' '{mnt}/f'")
    st = os.stat(remote / "f")
    assert int(st.st_mtime) == int(st.st_atime) == 981173106
    sh(f"touch -a -d '2010-01-01 00:00:00 UTC' '{mnt}/f'")
    st = os.stat(remote / "f")
    assert int(st.st_atime) == 1262304000
    assert int(st.st_mtime) == 981173106  # untouched
    sh(f"touch -m -d '2012-01-01 00:00:00 UTC' '{mnt}/f'")
    st = os.stat(remote / "f")
    assert int(st.st_mtime) == 1325376000
    assert int(st.st_atime) == 1262304000  # untouched
    assert sh(f"stat -c '%X %Y' '{mnt}/f'").stdout.split() == ["1262304000", "1325376000"]
    sh(f"touch -m '{mnt}/f'")  # now
    st = os.stat(remote / "f")
    assert abs(st.st_mtime - __import__("time").time()) < 30
    assert int(st.st_atime) == 1262304000


def test_times_outside_v3_refused(mount, remote):
    mnt = mount(remote)
    (remote / "f").write_text("x")
    os.utime(remote / "f", (1000000000, 1000000000))
    for date in ("1960-01-01 UTC", "2200-01-01 UTC"):
        r = sh(f"touch -d '{date}' '{mnt}/f'", check=False)
        assert r.returncode != 0
        assert "Value too large" in r.stderr or "Invalid argument" in r.stderr
    st = os.stat(remote / "f")
    assert int(st.st_mtime) == 1000000000  # never wrapped into another date


@pytest.mark.needs("lsetstat")
def test_lchown_changes_the_link_not_its_target(mount, remote):
    mnt = mount(remote)
    (remote / "target").write_text("x")
    os.symlink("target", remote / "link")
    sh(f"chown -h 4321:4321 '{mnt}/link'")
    assert os.lstat(remote / "link").st_uid == 4321
    assert os.stat(remote / "target").st_uid == 0
    sh(f"touch -h -d '2003-03-03 UTC' '{mnt}/link'")
    assert int(os.lstat(remote / "link").st_mtime) == 1046649600
    assert int(os.stat(remote / "target").st_mtime) != 1046649600


@pytest.mark.needs("truncate")
def test_ftruncate_and_fchmod_on_open_file(mount, remote):
    mnt = mount(remote)
    out = pyrun(f"""
import os
fd = os.open('{mnt}/f', os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, b'x' * 5000)
os.ftruncate(fd, 10)
os.fchmod(fd, 0o604)
print(os.fstat(fd).st_size, oct(os.fstat(fd).st_mode & 0o777))
os.close(fd)
""")
    assert out.split() == ["10", "0o604"]
    assert (remote / "f").read_bytes() == b"x" * 10
    assert os.stat(remote / "f").st_mode & 0o777 == 0o604
