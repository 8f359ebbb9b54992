"""Whole small files read ahead during a directory walk (src/fs/small_file_readahead.*), through a real
mount: walks give the server's bytes, and nothing read ahead is served once it may be stale.

After the application lists a directory and opens two of its small files, the mount opens and reads
the next 16 small files (<= 64 KiB) of the listing at once and answers their opens from what it read.
The rule being tested: a file changed through the mount is never served from the read-ahead; one
changed on the server is read afresh once the mount sees other attributes for it, or once the
read-ahead is older than its age limit (2 s); a file written within the last 2 s is not read ahead
(a same-size rewrite within its mtime's second would look unchanged). Whether the shortcut happens is
read from `sftpfs --status` ("small files read ahead: N started, N served, ..."), not from timings.
Files are dated 100 s in the past unless a test says otherwise, so the recency rule leaves them alone."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import sftpfs_binary, wait_until
from test_fs_helpers import pyrun, sh
from test_reconnect import proxied  # noqa: F401 (a fixture)

MAX_AGE = 2.0  # SmallFileReadAhead::kMaxAge
PER_DIRECTORY = 16
MAX_HELD = 64


def counts(mnt):
    out = subprocess.run([sftpfs_binary(), "--status", str(mnt)], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"small files read ahead: (\d+) started, (\d+) served, (\d+) discarded, (\d+) held", out)
    assert m, out
    return dict(zip(("started", "served", "discarded", "held"), map(int, m.groups())))


def content(tag, size):
    block = (tag + ":").encode() * (size // (len(tag) + 1) + 1)
    return block[:size]


def make_dir(path, n, size, age=100, prefix="f"):
    """n files of `size` bytes (a callable: size of file i), dated `age` seconds ago."""
    path.mkdir(parents=True, exist_ok=True)
    then = time.time() - age
    for i in range(n):
        f = path / f"{prefix}{i:03d}"
        f.write_bytes(content(f"{path.name}/{f.name}", size(i) if callable(size) else size))
        os.utime(f, (then, then))


def rewrite_same_size_same_mtime(f, tag):
    st = os.stat(f)
    f.write_bytes(content(tag, st.st_size))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def server_order(d):
    """The order the server lists the directory in (sftp-server reads it with readdir, as listdir does)."""
    return os.listdir(d)


def walk(mnt_dir, names):
    """In one child process: list the directory (as a walk does), then read `names` in that order."""
    out = pyrun(f"""
import json, os, hashlib
d = {str(mnt_dir)!r}
listed = os.listdir(d)
got = {{}}
for n in {names!r}:
    with open(os.path.join(d, n), 'rb') as f:
        got[n] = f.read().hex()
print(json.dumps(got))
""")
    return {n: bytes.fromhex(h) for n, h in json.loads(out).items()}


def read_through(path):
    return bytes.fromhex(pyrun(f"print(open({str(path)!r}, 'rb').read().hex())").strip())


def walk_tree(mount, remote, dirs, files):
    """tree/d0..: `files` files of 2000 bytes each; mounts, then walks each directory in the server's
    order (list, read every file) and checks every file read. Returns the mount."""
    for i in range(dirs):
        make_dir(remote / "tree" / f"d{i}", files, 2000)
    mnt = mount(remote)
    for i in range(dirs):
        d = remote / "tree" / f"d{i}"
        got = walk(mnt / "tree" / f"d{i}", server_order(d))
        assert len(got) == files and all(got[n] == (d / n).read_bytes() for n in got)
    return mnt


def start_read_ahead(mnt, d, order, first=2):
    """Lists d and reads its first two files: the read-ahead of the next 16 starts."""
    walk(mnt / d, order[:first])
    assert wait_until(lambda: counts(mnt)["started"] >= PER_DIRECTORY, timeout=10), counts(mnt)
    time.sleep(0.3)  # let the OPEN/READ/FSTAT round trips complete


def test_tools_over_a_tree_of_small_files_get_the_servers_bytes(mount, remote, tmp_path):
    sizes = [0, 1, 100, 4095, 4096, 4097, 30000, 65535, 65536, 65537, 100000]
    for d in range(4):
        make_dir(remote / "tree" / f"d{d}", 40, lambda i: sizes[i % len(sizes)])
        make_dir(remote / "tree" / f"d{d}" / "sub", 20, lambda i: sizes[(i * 3) % len(sizes)])
    mnt = mount(remote)
    tree = mnt / "tree"
    # grep -r: every file's line count, as on the server's disk.
    mine = sh(f"cd '{tree}' && grep -r -c '' . | sort").stdout
    theirs = sh(f"cd '{remote / 'tree'}' && grep -r -c '' . | sort").stdout
    assert mine == theirs and mine.count("\n") == 4 * 60
    after_grep = counts(mnt)
    assert after_grep["served"] >= 4 * 60 // 2, after_grep  # most small files came from the read-ahead
    # cp -r out and tar c: byte-identical trees.
    sh(f"cp -r '{tree}' '{tmp_path}/copy' && diff -r '{remote / 'tree'}' '{tmp_path}/copy'")
    (tmp_path / "untar").mkdir()
    sh(f"tar cf - -C '{tree}' . | tar xf - -C '{tmp_path}/untar' && diff -r '{remote / 'tree'}' '{tmp_path}/untar'")
    # cat, file after file in listing order.
    for d in range(4):
        order = server_order(remote / "tree" / f"d{d}")
        files = [n for n in order if n != "sub"]
        got = walk(tree / f"d{d}", files)
        for n in files:
            assert got[n] == (remote / "tree" / f"d{d}" / n).read_bytes(), n
    final = counts(mnt)
    assert final["served"] > after_grep["served"] + 100, final  # each walk used it again
    assert final["held"] <= MAX_HELD


def test_during_a_walk_the_first_open_in_the_next_directory_starts_the_read_ahead(mount, remote):
    mnt = walk_tree(mount, remote, dirs=8, files=6)
    # The first directory needs two opens of the application's own; each next one only one.
    assert counts(mnt)["served"] >= 4 + 7 * 5 - 3, counts(mnt)  # 4 + 7 * 4 without it


def test_during_a_walk_a_listed_directory_is_read_ahead_before_its_first_open(mount, remote):
    """A tree of directories with 3 files each: once a walk goes on, a directory's files are read
    ahead when the application has read its listing, so even its first open is served from there."""
    mnt = walk_tree(mount, remote, dirs=8, files=3)
    # The first directory: its third file (two opens of the application's own start it). Each next
    # one: all three (two without reading ahead at the listing).
    assert counts(mnt)["served"] >= 1 + 7 * 3 - 2, counts(mnt)


def test_a_same_size_change_on_the_server_after_the_read_ahead_is_read_afresh_after_the_age_limit(mount, remote):
    make_dir(remote / "d", 30, 1000)
    order = server_order(remote / "d")
    mnt = mount(remote)
    start_read_ahead(mnt, "d", order)
    # An unchanged file is served from the read-ahead, with the server's bytes.
    before = counts(mnt)
    assert read_through(mnt / "d" / order[2]) == (remote / "d" / order[2]).read_bytes()
    assert counts(mnt)["served"] == before["served"] + 1
    # Same size, same mtime: nothing the mount can see tells it from the file read ahead. The age limit
    # bounds how long the old bytes may be served; after it the file is read afresh.
    changed = remote / "d" / order[3]
    rewrite_same_size_same_mtime(changed, "changed on the server")
    time.sleep(MAX_AGE + 0.5)
    assert read_through(mnt / "d" / order[3]) == changed.read_bytes()


def test_new_attributes_seen_by_the_mount_make_the_file_read_afresh(mount, remote):
    make_dir(remote / "d", 30, 1000)
    order = server_order(remote / "d")
    # Listings expire after 0.3 s, so listing the directory again (within the read-ahead's age limit)
    # asks the server and the mount sees the file's new size and mtime.
    mnt = mount(remote, options=("dcache_dir_timeout=0.3",))
    start_read_ahead(mnt, "d", order)
    changed = remote / "d" / order[4]
    changed.write_bytes(content("longer now, changed on the server", 1500))
    then = time.time() - 50
    os.utime(changed, (then, then))
    out = pyrun(f"""
import os, time
d = {str(mnt / 'd')!r}
time.sleep(0.4)
os.listdir(d)
print(open(os.path.join(d, {order[4]!r}), 'rb').read().hex())
""")
    assert bytes.fromhex(out.strip()) == changed.read_bytes()


def test_a_file_written_within_the_last_seconds_is_not_read_ahead(mount, remote):
    make_dir(remote / "d", 30, 1000)
    order = server_order(remote / "d")
    fresh = remote / "d" / order[3]
    fresh.write_bytes(content("just written", 1000))  # mtime: now
    mnt = mount(remote)
    start_read_ahead(mnt, "d", order)
    # Rewritten within the same second, same size: size and mtime stay what they were. Had it been read
    # ahead before this, nothing would tell the old bytes from the new ones.
    rewrite_same_size_same_mtime(fresh, "rewritten in the same second")
    assert read_through(mnt / "d" / order[3]) == fresh.read_bytes()
    # Its neighbours were read ahead and served.
    before = counts(mnt)
    assert read_through(mnt / "d" / order[4]) == (remote / "d" / order[4]).read_bytes()
    assert counts(mnt)["served"] == before["served"] + 1


def test_changes_through_the_mount_are_never_served_stale(mount, remote):
    make_dir(remote / "d", 30, 1000)
    order = server_order(remote / "d")
    mnt = mount(remote)
    start_read_ahead(mnt, "d", order)
    d = mnt / "d"
    # Same size, within the same second as the read-ahead's view: only the mount's own record of the
    # change can tell.
    written, truncated, replaced, recreated, renamed = order[2:7]
    pyrun(f"""
import os
d = {str(d)!r}
with open(os.path.join(d, {written!r}), 'r+b') as f:
    f.write(b'W' * 10)
os.truncate(os.path.join(d, {truncated!r}), 500)
os.rename(os.path.join(d, {order[10]!r}), os.path.join(d, {replaced!r}))
os.unlink(os.path.join(d, {recreated!r}))
with open(os.path.join(d, {recreated!r}), 'wb') as f:
    f.write(b'R' * 1000)
os.rename(os.path.join(d, {renamed!r}), os.path.join(d, 'moved'))
""")
    stale = [name for name in (written, truncated, replaced, recreated, "moved")
             if read_through(d / name) != (remote / "d" / name).read_bytes()]
    assert stale == []
    assert read_through(d / written)[:10] == b"W" * 10
    assert read_through(d / recreated) == b"R" * 1000


def test_files_larger_than_64_kib_are_not_read_ahead(mount, remote):
    make_dir(remote / "big", 20, 65537)
    make_dir(remote / "edge", 20, 65536)
    mnt = mount(remote)
    order = server_order(remote / "big")
    got = walk(mnt / "big", order)
    assert all(got[n] == (remote / "big" / n).read_bytes() for n in order)
    assert counts(mnt)["started"] == 0
    order = server_order(remote / "edge")
    got = walk(mnt / "edge", order)
    assert all(got[n] == (remote / "edge" / n).read_bytes() for n in order)
    c = counts(mnt)
    assert c["started"] == 18 and c["served"] >= 16, c  # everything after the first two


def test_at_most_16_per_directory_and_64_in_all(mount, remote):
    for i in range(5):
        make_dir(remote / f"d{i}", 40, 100)
    mnt = mount(remote)
    walk(mnt / "d0", server_order(remote / "d0")[:2])
    assert wait_until(lambda: counts(mnt)["started"] >= PER_DIRECTORY, timeout=10)
    time.sleep(0.3)
    assert counts(mnt)["started"] == PER_DIRECTORY  # no more while the application reads nothing
    for i in range(1, 5):
        walk(mnt / f"d{i}", server_order(remote / f"d{i}")[:2])
    c = counts(mnt)
    assert c["started"] == MAX_HELD and c["held"] <= MAX_HELD, c
    # Nothing opened stays held past the age limit: handles closed, budget given back.
    assert wait_until(lambda: counts(mnt)["held"] == 0, timeout=MAX_AGE + 3), counts(mnt)
    assert counts(mnt)["discarded"] == MAX_HELD


def test_the_prefetch_budget_bounds_the_bytes_read_ahead(mount, remote):
    # 1 MiB in all (shared with the sequential prefetch of the files the application reads itself):
    # at most 17 files of 60,000 bytes (+1 each) at once, where two directories would start 32.
    make_dir(remote / "a", 30, 60000)
    make_dir(remote / "b", 30, 60000)
    mnt = mount(remote, options=("prefetch_budget=1",))
    walk(mnt / "a", server_order(remote / "a")[:2])
    assert wait_until(lambda: counts(mnt)["started"] >= 1, timeout=10)
    walk(mnt / "b", server_order(remote / "b")[:2])
    c = counts(mnt)
    assert 1 <= c["started"] <= (1 << 20) // 60001, c
    # Reading everything still gives the server's bytes.
    for name in ("a", "b"):
        order = server_order(remote / name)
        got = walk(mnt / name, order)
        assert all(got[n] == (remote / name / n).read_bytes() for n in order)


def test_nothing_is_read_ahead_with_cache_off(mount, remote):
    make_dir(remote / "d", 30, 1000)
    mnt = mount(remote, options=("cache=no",))
    order = server_order(remote / "d")
    got = walk(mnt / "d", order)
    assert all(got[n] == (remote / "d" / n).read_bytes() for n in order)
    assert counts(mnt)["started"] == 0


def test_files_read_ahead_before_a_reconnect_are_read_afresh(proxied):
    """Handles held by the read-ahead are reopened by a reconnect like any open file; what was read
    before the cut is not served (the file may have changed while the mount could not see it)."""
    rig = proxied
    make_dir(rig.remote / "d", 30, 1000)
    order = server_order(rig.remote / "d")
    mnt = rig.mount(rig.remote)
    start_read_ahead(mnt, "d", order)
    rewrite_same_size_same_mtime(rig.remote / "d" / order[2], "changed during the cut")
    assert rig.proxy.cut() >= 1
    got = walk(mnt / "d", order)
    stale = [n for n in order if got[n] != (rig.remote / "d" / n).read_bytes()]
    assert stale == []
    assert counts(mnt)["discarded"] >= 1
