"""Rule 6: attribute changes on a file this mount created and still holds open (tar's and cp -p's
futimens, fchmod, fchown) are answered before the server confirms them. The new values show at once
through the mount and reach the server; a change the server refuses is reported at the file's close
(or earlier), never lost; a change to a file opened without creating it still waits for the server."""
import errno
import os
import subprocess

import pytest

from test_fs_helpers import sh

# The server's sftp-server says PERMISSION_DENIED for the EPERM of an immutable file: EACCES here.
REFUSED = (errno.EPERM, errno.EACCES)


def _create(path, data=b"data\n", mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    return fd


def test_changes_on_a_created_file_show_at_once_and_reach_the_server(mount, remote):
    mnt = mount(remote)
    fd = _create(mnt / "f")
    try:
        os.fchmod(fd, 0o640)
        os.utime(fd, (1000000000, 1100000000))
        st = os.stat(mnt / "f")   # another process's view, before the close
        assert st.st_mode & 0o7777 == 0o640
        assert int(st.st_mtime) == 1100000000 and int(st.st_atime) == 1000000000
        os.write(fd, b"more\n")
        os.utime(fd, (1200000000, 1300000000))   # after a later write: the write must not move it
    finally:
        os.close(fd)
    st = os.stat(remote / "f")
    assert st.st_mode & 0o7777 == 0o640
    assert int(st.st_mtime) == 1300000000 and int(st.st_atime) == 1200000000
    assert (remote / "f").read_bytes() == b"data\nmore\n"
    assert sh(f"stat -c '%a %Y' '{mnt}/f'").stdout.split() == ["640", "1300000000"]


def test_tar_and_cp_p_keep_modes_and_times(mount, remote, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, mode in enumerate((0o600, 0o644, 0o755, 0o640)):
        f = src / f"f{i}"
        f.write_text(f"file {i}\n" * (i + 1))
        f.chmod(mode)
        os.utime(f, (1000000000 + i, 1100000000 + i))
    mnt = mount(remote)
    sh(f"tar -C '{tmp_path}' -cf '{tmp_path}/t.tar' src && tar -C '{mnt}' -xf '{tmp_path}/t.tar'")
    sh(f"cp -rp '{src}' '{mnt}/cp'")
    for copy in (remote / "src", remote / "cp"):
        for i, mode in enumerate((0o600, 0o644, 0o755, 0o640)):
            st = os.stat(copy / f"f{i}")
            assert st.st_mode & 0o7777 == mode, copy / f"f{i}"
            assert int(st.st_mtime) == 1100000000 + i, copy / f"f{i}"
            assert (copy / f"f{i}").read_text() == f"file {i}\n" * (i + 1)


@pytest.fixture
def immutable():
    """chattr +i on server-side files (root cannot chmod them); always undone so cleanup works."""
    made = []

    def make(path):
        subprocess.run(["chattr", "+i", str(path)], check=True)
        made.append(path)
    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("times_first", [True, False], ids=["after-times", "after-data"])
def test_a_refused_change_is_reported_at_close_not_lost(mount, remote, immutable, times_first):
    # after-times: tar sets the times, then the mode. after-data: unzip and install change the mode
    # right after the data; the server moved the mtime with it, so the answer's own attributes are
    # not kept, but the change is answered at once all the same.
    mnt = mount(remote)
    fd = _create(mnt / "f")
    closed = False
    try:
        if times_first:
            os.utime(fd, (1000000000, 1000000000))
        os.fsync(fd)                 # the data (and the times) are on the server
        immutable(remote / "f")      # from now on the server refuses any change to it
        os.fchmod(fd, 0o604)         # answered before the server (rule 6) ...
        closed = True
        with pytest.raises(OSError) as info:
            os.close(fd)             # ... whose refusal close reports
        assert info.value.errno in REFUSED
    finally:
        if not closed:
            os.close(fd)
    # And the mount shows what the server has.
    assert os.stat(remote / "f").st_mode & 0o7777 == 0o600
    assert sh(f"stat -c %a '{mnt}/f'").stdout.strip() == "600"


def test_a_refused_change_is_reported_at_the_next_fsync(mount, remote, immutable):
    mnt = mount(remote)
    fd = _create(mnt / "f")
    try:
        os.fsync(fd)
        immutable(remote / "f")
        os.utime(fd, (1000000000, 1000000000))
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno in REFUSED
        # The mount shows what the server has, not the refused times.
        assert int(os.stat(mnt / "f").st_mtime) == int(os.stat(remote / "f").st_mtime) != 1000000000
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_file_not_created_by_this_mount_still_waits(mount, remote, immutable):
    mnt = mount(remote)
    (remote / "f").write_text("x")
    os.chmod(remote / "f", 0o600)
    immutable(remote / "f")
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            os.fchmod(fd, 0o644)     # the server refuses: the caller hears it at the call
        assert info.value.errno in REFUSED
    finally:
        os.close(fd)


def test_a_mode_change_after_the_data_shows_the_servers_mtime(mount, remote):
    mnt = mount(remote)
    fd = _create(mnt / "f")
    try:
        os.utime(fd, (1000000000, 1000000000))   # answered early: the mount knows this mtime ...
        os.write(fd, b"more\n")                  # ... until the server moves it with the write
        os.fchmod(fd, 0o640)
        seen = os.fstat(fd)
        assert seen.st_mode & 0o7777 == 0o640
        assert int(seen.st_mtime) == int(os.stat(remote / "f").st_mtime) != 1000000000
    finally:
        os.close(fd)
    real = os.stat(remote / "f")
    assert real.st_mode & 0o7777 == 0o640 and (remote / "f").read_bytes() == b"data\nmore\n"
    st = os.stat(mnt / "f")
    assert (st.st_mode, int(st.st_mtime), st.st_size) == (real.st_mode, int(real.st_mtime), real.st_size)
