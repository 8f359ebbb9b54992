"""sftpfs on every SFTP server people run (servers.py starts each from Debian's packages on 127.0.0.1):
a smoke test of the everyday operations on each, then one test per server difference (docs/servers.md).
Results are checked on the server side (its local directory). The rest of the filesystem tests run on
one server at a time with scripts/test-servers.sh (SFTPFS_TEST_SERVER)."""
import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

import servers
from conftest import Mounter, Proxied, sftpfs_binary, wait_until
from fault_proxy import FaultProxy
from test_fs_helpers import make_file, sh, sha256_local, sha256_mounted

OTHERS = [name for name in servers.ALL if name != "openssh"]  # openssh: every other test file


@pytest.fixture(scope="module", params=OTHERS)
def server(request, tmp_path_factory):
    try:
        srv = servers.start_server(request.param, tmp_path_factory.mktemp(f"srv-{request.param}-"))
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def area(server, request) -> Path:
    """A fresh directory on the server for one test."""
    path = server.remote_base / request.node.name.split("[")[0]
    if path.exists():
        sh(f"rm -rf '{path}'")
    path.mkdir()
    return path


@pytest.fixture
def smount(server, tmp_path):
    mounter = Mounter(server, tmp_path)
    try:
        yield mounter
    finally:
        mounter.close()


def has(server, feature):
    return feature in server.features


def test_everyday_operations(server, area, smount, tmp_path):
    mnt = smount(area)
    src = tmp_path / "src.bin"
    make_file(src, 3 << 20, seed=3)
    sh(f"cp '{src}' '{mnt}/f.bin'")
    # sftpfs does not wait for CLOSE's reply (release), and rclone completes a file at CLOSE (it
    # writes a partial file and renames it): the server's copy may take a moment.
    want = sha256_local(src)
    wait_until(lambda: (area / "f.bin").exists() and sha256_local(area / "f.bin") == want)
    assert sha256_local(area / "f.bin") == want
    assert sha256_mounted(mnt / "f.bin") == sha256_local(src)
    sh(f"mkdir -p '{mnt}/d/e' && echo hello > '{mnt}/d/e/g' && mv '{mnt}/d/e/g' '{mnt}/d/h'")
    assert (area / "d" / "h").read_text() == "hello\n"
    assert sorted(os.listdir(mnt / "d")) == ["e", "h"]
    assert sh(f"cat '{mnt}/d/h'").stdout == "hello\n"
    # replace an existing name (posix-rename, or whatever the server's RENAME does)
    sh(f"echo new > '{mnt}/n' && mv '{mnt}/n' '{mnt}/d/h'")
    assert (area / "d" / "h").read_text() == "new\n"
    sh(f"rm '{mnt}/d/h' && rmdir '{mnt}/d/e' '{mnt}/d'")
    assert sorted(os.listdir(area)) == ["f.bin"]
    assert sorted(os.listdir(mnt)) == ["f.bin"]
    if has(server, "utimes"):   # rclone: touch of an existing file empties it (docs/servers.md)
        sh(f"touch -d '2001-02-03 04:05:06 UTC' '{mnt}/f.bin'")
        assert int(os.stat(area / "f.bin").st_mtime) == 981173106
        assert sh(f"stat -c %Y '{mnt}/f.bin'").stdout.strip() == "981173106"
        assert sha256_local(area / "f.bin") == sha256_local(src)


def test_tree_copy_both_ways(server, area, smount, tmp_path):
    mnt = smount(area)
    tree = tmp_path / "tree"
    for i in range(20):
        (tree / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        make_file(tree / f"d{i % 4}" / f"f{i}", i * 1000, seed=i)
    sh(f"cp -r '{tree}' '{mnt}/tree'")
    sh(f"diff -r '{tree}' '{area}/tree'")
    sh(f"cp -r '{mnt}/tree' '{tmp_path}/back'")
    sh(f"diff -r '{tree}' '{tmp_path}/back'")


def test_symlink_lands_at_the_name_given(server, area, smount):
    """asyncssh takes SYMLINK's arguments in the order it guesses from our version string; gesftpserver in
    the draft's order: sftpfs learns the order from the first SYMLINK and never leaves a link elsewhere."""
    if not has(server, "symlink"):
        pytest.skip(f"{server.name} has no symlinks")
    mnt = smount(area)
    (area / "big").write_text("data\n")
    (area / "dir").mkdir()
    before_cwd = set(os.listdir(server.dir))
    before_base = set(os.listdir(server.remote_base))
    sh(f"ln -s big '{mnt}/dir/lnk'")   # relative target: the reversed order would make a link named "big"
    sh(f"ln -s ../big '{mnt}/dir/lnk2'")
    sh(f"ln -s '{mnt}/big' '{mnt}/abs'")
    assert os.path.islink(area / "dir" / "lnk") and os.path.islink(area / "dir" / "lnk2")
    assert (area / "dir" / "lnk2").read_text() == "data\n"
    assert sorted(os.listdir(area)) == ["abs", "big", "dir"]
    assert sorted(os.listdir(area / "dir")) == ["lnk", "lnk2"]
    assert set(os.listdir(server.dir)) == before_cwd   # nothing where the server's own cwd is
    assert set(os.listdir(server.remote_base)) == before_base
    assert not os.path.islink(area / "big")
    # Through the mount, links resolve on every server: proftpd answers READLINK with absolute paths
    # in its chroot, which sftpfs shows relative by default (transform_symlinks).
    assert sh(f"cat '{mnt}/dir/lnk2'").stdout == "data\n"
    assert os.readlink(mnt / "dir" / "lnk2") == "../big"
    assert os.readlink(mnt / "dir" / "lnk") == "big"
    if has(server, "readlink-relative"):
        assert os.readlink(area / "dir" / "lnk") == "big"


def test_chmod_shows_the_servers_truth(server, area, smount):
    mnt = smount(area)
    (area / "f").write_text("x")
    os.chmod(area / "f", 0o644)
    sh(f"stat '{mnt}/f' >/dev/null")   # cached as 644
    r = sh(f"chmod 640 '{mnt}/f'", check=False)
    server_mode = os.stat(area / "f").st_mode & 0o7777
    assert sh(f"stat -c %a '{mnt}/f'").stdout.strip() == f"{server_mode:o}"
    if has(server, "chmod"):
        assert r.returncode == 0 and server_mode == 0o640
    else:
        assert r.returncode != 0 and server_mode == 0o644, "an ignored chmod must fail"


def test_truncate_shows_the_servers_truth(server, area, smount):
    mnt = smount(area)
    data = bytes(range(256)) * 4
    (area / "t").write_bytes(data[:1000])
    r = sh(f"truncate -s 100 '{mnt}/t'", check=False)
    # rclone applies what it does to its own files a moment later: wait for the two to agree
    wait_until(lambda: sh(f"stat -c %s '{mnt}/t'").stdout.strip() == str(os.path.getsize(area / "t")), timeout=5)
    on_server = (area / "t").read_bytes()
    assert sh(f"stat -c %s '{mnt}/t'").stdout.strip() == str(len(on_server))
    if has(server, "truncate"):
        assert r.returncode == 0 and on_server == data[:100]
    elif len(on_server) != 100:
        assert r.returncode != 0, "a truncation the server did not make must fail"


def test_append_lands_or_close_fails(server, area, smount):
    mnt = smount(area, ["attr_timeout=2"])
    out = subprocess.run(["/usr/bin/python3", "-c", f"""
import os
fd = os.open('{mnt}/log', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b'one\\n'); os.close(fd)
fd = os.open('{mnt}/log', os.O_WRONLY | os.O_APPEND)
os.write(fd, b'two\\n')
try:
    os.close(fd)
    print('closed')
except OSError as e:
    print('close failed', e.errno)
"""], capture_output=True, text=True, timeout=60)
    on_server = (area / "log").read_bytes()
    if not has(server, "append"):
        # rclone finishes an upload at CLOSE, after answering it: the first handle's file can appear
        # after the failed append's FSTAT said 0, as a change by another client would, and the mount
        # shows it once its attributes expire (attr_timeout=2 here).
        wait_until(lambda: sh(f"stat -c %s '{mnt}/log'").stdout.strip() == str(len((area / "log").read_bytes())),
                   timeout=5)
        on_server = (area / "log").read_bytes()
    assert sh(f"stat -c %s '{mnt}/log'").stdout.strip() == str(len(on_server))
    if has(server, "append"):
        assert out.stdout.strip() == "closed" and on_server == b"one\ntwo\n"
    elif on_server != b"one\ntwo\n":
        assert out.stdout.strip().startswith("close failed"), f"lost append went unreported: {on_server!r}"


def test_hard_link_made_or_refused(server, area, smount):
    mnt = smount(area)
    (area / "a").write_text("x")
    sh(f"stat '{mnt}/a' >/dev/null")
    r = sh(f"ln '{mnt}/a' '{mnt}/b'", check=False)
    made = (area / "b").exists()
    assert (r.returncode == 0) == made
    assert sh(f"stat -c %h '{mnt}/a'").stdout.strip() == ("2" if made else "1")
    if has(server, "hardlink"):
        assert made and os.stat(area / "a").st_ino == os.stat(area / "b").st_ino


def test_rename_noreplace_never_replaces(server, area, smount):
    """Plain RENAME onto an existing name: refused by most servers, done by rclone. sftpfs learns which
    from its first rename of a file over a file; RENAME_NOREPLACE must never replace on either kind."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    mnt = smount(area)
    for name in ("a", "b", "src"):
        (area / name).write_text(name)
    sh(f"mv '{mnt}/a' '{mnt}/b'")  # over an existing file: replaced, whatever plain RENAME does
    assert not (area / "a").exists() and (area / "b").read_text() == "a"
    sh(f"ls '{mnt}' >/dev/null")
    (area / "late").write_text("theirs")  # behind the mount's back: its listing says absent
    rc = libc.renameat2(-100, os.fsencode(f"{mnt}/src"), -100, os.fsencode(f"{mnt}/late"), 1)
    err = ctypes.get_errno()
    assert (area / "late").read_text() == "theirs", "RENAME_NOREPLACE replaced an existing file"
    assert (rc, err) == (-1, errno.EEXIST) and (area / "src").read_text() == "src"



def test_a_long_write_at_latency_is_exact_over_extra_channels(server, area, tmp_path):
    """At a round trip long enough for extra SFTP channels (8 ms, through the fault proxy), a long
    write stream also goes over more channels of the session on servers that write in place, and every
    byte lands everywhere."""
    src = tmp_path / "src.bin"
    make_file(src, 24 << 20, seed=11)
    want = sha256_local(src)
    with FaultProxy(server.port) as proxy:
        proxy.latency(0.004)
        mounter = Mounter(Proxied(server, proxy.port), tmp_path)
        try:
            mnt = mounter(area)
            sh(f"dd if='{src}' of='{mnt}/big' bs=1M conv=fsync status=none")
            status = subprocess.run([sftpfs_binary(), "--status", str(mnt)], capture_output=True, text=True,
                                    timeout=30).stdout
            # Striping needs writes in place through every handle: only servers offering fsync@openssh.com
            # (rclone uploads each handle's writes apart and would lose them; paramiko offers no fsync).
            opened = re.findall(r"SFTP channels open (\d+) of", status)
            assert opened == (["4"] if has(server, "fsync") else ["1"]), status
            wait_until(lambda: (area / "big").exists() and sha256_local(area / "big") == want)
            assert sha256_local(area / "big") == want
            assert sha256_mounted(mnt / "big") == want
        finally:
            mounter.close()


def test_df_never_invents_numbers(server, area, smount):
    mnt = smount(area)
    st = os.statvfs(mnt)
    if has(server, "statvfs"):
        assert st.f_blocks > 0
    else:
        assert st.f_blocks == 0 and st.f_bavail == 0


def test_cp_a_of_a_tree_with_a_symlink(server, area, smount, tmp_path):
    """Without lsetstat the link's own times are left alone (README) and the copy finishes."""
    if not has(server, "symlink"):
        pytest.skip(f"{server.name} has no symlinks")
    mnt = smount(area)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    os.symlink("f", tree / "l")
    sh(f"cp -a '{tree}' '{mnt}/copy'")
    assert (area / "copy" / "f").read_text() == "x"
    assert os.path.islink(area / "copy" / "l")
