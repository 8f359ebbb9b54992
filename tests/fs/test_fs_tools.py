"""Ordinary tools on the mount: tar, rsync, git, find, du, df."""
import os

import pytest

from test_fs_helpers import make_file, sh


def make_tree(root):
    (root / "d1" / "d2").mkdir(parents=True)
    (root / "d1" / "f").write_text("hello\n")
    make_file(root / "d1" / "d2" / "bin", 70000, seed=5)
    (root / "empty").mkdir()
    (root / "zero").write_bytes(b"")
    os.symlink("f", root / "d1" / "rel")
    os.symlink("../nowhere", root / "d1" / "d2" / "dangling")
    os.symlink("/etc/hostname", root / "abs")
    os.chmod(root / "d1" / "f", 0o640)
    os.utime(root / "d1" / "f", (1500000000, 1500000000))


@pytest.mark.needs("readlink-relative")
def test_tar_round_trip(mount, remote, tmp_path):
    mnt = mount(remote)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    sh(f"tar -C '{src}' -cf - . | tar -C '{mnt}' -xpf -")
    sh(f"diff -r --no-dereference '{src}' '{remote}'")
    assert os.readlink(remote / "d1" / "rel") == "f"
    assert os.stat(remote / "d1" / "f").st_mode & 0o777 == 0o640
    assert int(os.stat(remote / "d1" / "f").st_mtime) == 1500000000
    out = tmp_path / "out"
    out.mkdir()
    sh(f"tar -C '{mnt}' -cf - . | tar -C '{out}' -xpf -")
    sh(f"diff -r --no-dereference '{src}' '{out}'")
    listing = lambda p: sh(f"cd '{p}' && find . -printf '%p %y %m %s %l\\n' | sort").stdout
    assert listing(out) == listing(src)


@pytest.mark.needs("lsetstat")
def test_rsync_in_and_out(mount, remote, tmp_path):
    mnt = mount(remote)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    sh(f"rsync -a '{src}/' '{mnt}/tree/'")
    sh(f"diff -r --no-dereference '{src}' '{remote}/tree'")
    second = sh(f"rsync -ai '{src}/' '{mnt}/tree/'").stdout
    assert second.strip() == "", second  # nothing to transfer the second time
    back = tmp_path / "back"
    sh(f"rsync -a '{mnt}/tree/' '{back}/'")
    sh(f"diff -r --no-dereference '{src}' '{back}'")
    again = sh(f"rsync -ai '{mnt}/tree/' '{back}/'").stdout
    assert again.strip() == "", again


def test_git_on_the_mount(mount, remote):
    mnt = mount(remote)
    git = "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main"
    sh(f"cd '{mnt}' && {git} init -q repo && cd repo && echo one > a && mkdir sub && echo two > sub/b && "
       f"{git} add . && {git} commit -qm first && echo three >> a && {git} commit -qam second")
    status = sh(f"cd '{mnt}/repo' && git status --porcelain").stdout
    assert status == ""
    log = sh(f"cd '{mnt}/repo' && git log --format=%s").stdout.split()
    assert log == ["second", "first"]
    # The repository is a valid one on the server side too.
    assert sh(f"git -C '{remote}/repo' fsck --strict").returncode == 0
    assert sh(f"git -C '{remote}/repo' log --format=%s").stdout.split() == ["second", "first"]
    sh(f"cd '{mnt}/repo' && echo dirty >> sub/b")
    assert sh(f"cd '{mnt}/repo' && git status --porcelain").stdout.strip() == "M sub/b"


def test_find_and_du(mount, remote):
    mnt = mount(remote)
    make_tree(remote)
    for i in range(50):
        (remote / "d1" / f"n{i}").write_bytes(b"y" * 1000)
    found = sorted(sh(f"cd '{mnt}' && find . -mindepth 1").stdout.split())
    expected = sorted(sh(f"cd '{remote}' && find . -mindepth 1").stdout.split())
    assert found == expected
    files = sh(f"cd '{mnt}' && find . -type f -size +500c | sort").stdout.split()
    assert len(files) == 51
    du_apparent = int(sh(f"du -s --apparent-size -B1 '{mnt}/d1/d2/bin'").stdout.split()[0])
    assert du_apparent == 70000
    total = int(sh(f"du -sk '{mnt}'").stdout.split()[0])
    assert total >= (70000 + 50 * 1000) // 1024


@pytest.mark.needs("statvfs")
def test_df_shows_server_figures(mount, remote):
    mnt = mount(remote)
    ours = os.statvfs(mnt)
    server = os.statvfs(remote)
    assert ours.f_frsize == server.f_frsize
    assert ours.f_blocks == server.f_blocks
    assert abs(ours.f_bavail - server.f_bavail) * server.f_frsize < 512 << 20  # others write meanwhile
    out = sh(f"df -P '{mnt}'").stdout.splitlines()[1].split()
    assert int(out[1]) == server.f_blocks * server.f_frsize // 1024
