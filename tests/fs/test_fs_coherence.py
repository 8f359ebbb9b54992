"""Two mounts of one remote, changes made straight on the server, and the strictly coherent mode;
a server that refuses an operation gives EACCES."""
import time

import pytest

from conftest import Mounter, private_sshd
from test_fs_helpers import pyrun, sh


def eventually(check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_two_mounts_see_each_other_within_the_cache_timeout(mount, remote):
    a = mount(remote, options=["cache_timeout=2"])
    b = mount(remote, options=["cache_timeout=2"])
    assert sh(f"ls -A '{b}'").stdout == ""  # B has now cached an empty listing
    sh(f"echo hello > '{a}/new'")
    assert eventually(lambda: sh(f"cat '{b}/new'", check=False).stdout == "hello\n", timeout=4)
    assert eventually(lambda: sh(f"ls '{b}'").stdout.split() == ["new"], timeout=4)
    sh(f"echo changed-size > '{a}/new'")
    assert eventually(lambda: sh(f"cat '{b}/new'", check=False).stdout == "changed-size\n", timeout=4)
    sh(f"rm '{a}/new'")
    assert eventually(lambda: sh(f"ls '{b}'").stdout == "", timeout=4)


def test_changes_on_the_server_seen_within_the_cache_timeout(mount, remote):
    mnt = mount(remote, options=["cache_timeout=1"])
    (remote / "f").write_text("v1")
    assert sh(f"cat '{mnt}/f'").stdout == "v1"
    (remote / "f").write_text("version two")
    assert eventually(lambda: sh(f"cat '{mnt}/f'").stdout == "version two", timeout=3)
    (remote / "f").unlink()
    assert eventually(lambda: sh(f"cat '{mnt}/f'", check=False).returncode != 0, timeout=3)


def test_caches_off_is_coherent_at_once(mount, remote):
    a = mount(remote, options=["cache=no"])
    b = mount(remote, options=["cache=no"])
    out = pyrun(f"""
import os
def check(cond, what):
    print('ok' if cond else 'FAIL ' + what)
check(os.listdir('{b}') == [], 'empty')
check(not os.path.exists('{b}/f'), 'absent first')   # a negative answer B must not keep
with open('{a}/f', 'w') as f: f.write('one')
check(os.listdir('{b}') == ['f'], 'listed at once')
check(open('{b}/f').read() == 'one', 'content at once')
with open('{a}/f', 'a') as f: f.write('two')
check(os.stat('{b}/f').st_size == 6, 'size at once')
check(open('{b}/f').read() == 'onetwo', 'new content at once')
os.chmod('{a}/f', 0o600)
check(os.stat('{b}/f').st_mode & 0o777 == 0o600, 'mode at once')
os.rename('{a}/f', '{a}/g')
check(not os.path.exists('{b}/f') and os.path.exists('{b}/g'), 'rename at once')
os.unlink('{a}/g')
check(os.listdir('{b}') == [], 'unlink at once')
""")
    assert out.split() == ["ok"] * (out.count("ok") + out.count("FAIL")), out
    assert "FAIL" not in out, out


@pytest.fixture
def readonly_sshd():
    """A second private sshd whose sftp server refuses every change (internal-sftp -R): the server
    itself answers PERMISSION_DENIED, as it would for a file the remote user may not write."""
    with private_sshd("sftpfs-ro-sshd-", ["Match all", "ForceCommand internal-sftp -R"]) as server:
        yield server


def test_permission_denied_is_eacces(readonly_sshd, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("readable")
    mounter = Mounter(readonly_sshd, tmp_path)
    try:
        mnt = mounter(data)
        assert sh(f"cat '{mnt}/f'").stdout == "readable"
        out = pyrun(f"""
import errno, os
def code(op):
    try:
        op(); return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
print(code(lambda: open('{mnt}/f', 'w')))
print(code(lambda: os.unlink('{mnt}/f')))
print(code(lambda: os.mkdir('{mnt}/d')))
print(code(lambda: os.chmod('{mnt}/f', 0o600)))
""")
        assert out.split() == ["EACCES"] * 4
        assert (data / "f").read_text() == "readable"
    finally:
        mounter.close()
