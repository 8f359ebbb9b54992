"""Round trips of the namespace (issue 9, cuts 1, 3, 7 and 8): absent names answered from listings, a
lookup waiting for the listing being read, removed names remembered missing, listings kept across a
directory's own attribute changes, RENAME_NOREPLACE as one plain RENAME on a server known to refuse an
existing target, a walk's readdir served from the listing read ahead, a listing in use read again before
it is too old to answer for absent names. Each is checked for the requests it saves and for the negative rule: what the mount
shows is what the server has, except that a name created elsewhere may stay hidden for negative_timeout.

The server is a private sshd whose sftp subsystem is bench/sftp-logger (OpenSSH's sftp-server logging
every request), so each test counts the requests that reached the server by path. "Another client" is
this test writing straight into the server's directory on the local disk.
"""
import ctypes
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import Mounter, Proxied, wait_until
from fault_proxy import FaultProxy
from logged_sshd import data, logged_sshd  # noqa: F401 (data: a fixture)

pytestmark = pytest.mark.openssh_only

NEGATIVE = 2.0  # negative_timeout of these mounts, seconds
OPTIONS = [f"negative_timeout={NEGATIVE:g}"]


@pytest.fixture(scope="module")
def logged():
    with logged_sshd("sftpfs-negatives-") as server:
        yield server


@pytest.fixture
def mounter(logged, tmp_path):
    m = Mounter(logged.server, tmp_path)
    try:
        yield m
    finally:
        m.close()


def absent(path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    return False


def make_files(directory: Path, names):
    for name in names:
        (directory / name).write_text(name)


def settle(logged, path):
    """Waits until the server has seen an OPENDIR of `path` (a listing read ahead began), and a while."""
    assert wait_until(lambda: logged.count("opendir", path) > 0, timeout=5)
    time.sleep(0.3)  # its READDIRs, locally well under this


# ---- cut 1: a listing read ahead answers for absent names within negative_timeout ------------------

def test_a_listing_read_ahead_answers_absent_names_and_a_later_creation_shows(logged, data, mounter):
    d = data / "inc"
    d.mkdir()
    make_files(d, [f"h{i}.h" for i in range(20)])
    m = mounter(data, OPTIONS)
    # gcc's pattern: a header missing from one -I directory. The lookup of "inc" read its listing
    # ahead (or the first miss does); the first miss asks the server or waits for that listing.
    assert absent(m / "inc" / "miss0.h")
    assert logged.count("lstat", d / "miss0.h") <= 1
    settle(logged, d)
    for i in range(1, 8):
        assert absent(m / "inc" / f"miss{i}.h")
        assert logged.count("lstat", d / f"miss{i}.h") == 0, "answered by the listing read ahead"
    # Present names still come from the listing, with the server's attributes.
    assert os.stat(m / "inc" / "h3.h").st_size == 4
    # Another client creates a name the listing lacks: hidden at most negative_timeout from the
    # listing's reading, then shown (the listing is too old to say "absent", the server is asked).
    (d / "late.h").write_text("late")
    listed_at = time.monotonic()
    time.sleep(NEGATIVE + 0.5 - (time.monotonic() - listed_at))
    assert os.stat(m / "inc" / "late.h").st_size == 4
    assert (m / "inc" / "late.h").read_text() == "late"
    # ... and a readdir shows it too (the stale listing was dropped when the LSTAT found the name).
    assert "late.h" in os.listdir(m / "inc")


def listed_include_dir(logged, data, mounter):
    """An -I directory of 20 headers, mounted and listed (a miss looked up): (dir, its mount, OPENDIRs so far)."""
    d = data / "inc"
    d.mkdir()
    make_files(d, [f"h{i}.h" for i in range(20)])
    m = mounter(data, OPTIONS)
    assert absent(m / "inc" / "miss0.h")
    settle(logged, d)
    return d, m, logged.count("opendir", d)


def test_a_listing_too_old_for_absent_names_is_read_again_once_not_an_lstat_per_name(logged, data, mounter):
    d, m, opendirs = listed_include_dir(logged, data, mounter)
    # The listing is now too old to say "absent" (a build that takes longer than negative_timeout),
    # and another client adds a name after it was read.
    time.sleep(NEGATIVE + 0.3)
    (d / "late.h").write_text("late")
    # The first miss is asked of the server, and the directory is read again meanwhile ...
    assert absent(m / "inc" / "first.h")
    assert logged.count("lstat", d / "first.h") == 1
    assert wait_until(lambda: logged.count("opendir", d) > opendirs, timeout=5), "the listing was not read again"
    time.sleep(0.3)  # its READDIRs
    assert logged.count("opendir", d) == opendirs + 1, "read again once"
    # ... so the next misses are answered from it, as gcc's are in each -I directory.
    for i in range(1, 11):
        assert absent(m / "inc" / f"miss{i}.h")
        assert logged.count("lstat", d / f"miss{i}.h") == 0, "answered by the listing read again"
    # The listing read again is what the server has now: the later name is there, no LSTAT needed.
    assert (m / "inc" / "late.h").read_text() == "late"
    assert logged.count("lstat", d / "late.h") == 0


def test_a_listing_in_use_is_read_again_before_it_is_too_old(logged, data, mounter):
    d, m, opendirs = listed_include_dir(logged, data, mounter)
    # Past half of negative_timeout a miss is still answered by the listing, and starts reading it again.
    time.sleep(NEGATIVE * 0.6)
    assert absent(m / "inc" / "a.h")
    assert logged.count("lstat", d / "a.h") == 0
    assert wait_until(lambda: logged.count("opendir", d) > opendirs, timeout=5), "the listing was not read again"
    # Past the first reading's negative_timeout, within the second's: misses cost nothing.
    time.sleep(NEGATIVE * 0.6)
    for i in range(10):
        assert absent(m / "inc" / f"b{i}.h")
        assert logged.count("lstat", d / f"b{i}.h") == 0, "answered by the listing read again ahead"


def test_a_name_created_while_its_listing_is_kept_current_shows_within_negative_timeout(logged, data, mounter):
    d, m, _ = listed_include_dir(logged, data, mounter)
    assert absent(m / "inc" / "late.h")  # remembered absent (here and by the kernel) for a while
    asked_before = logged.count("lstat", d / "late.h")
    (d / "late.h").write_text("late")
    created = time.monotonic()
    # Misses keep the directory's listing in use (and read again) while the new name is looked for.
    seen, i = None, 0
    while time.monotonic() - created < NEGATIVE + 2.0:
        assert absent(m / "inc" / f"keep{i}.h")
        i += 1
        if not absent(m / "inc" / "late.h"):
            seen = time.monotonic() - created
            break
        time.sleep(0.05)
    assert seen is not None, "a name created on the server stayed hidden"
    assert seen <= NEGATIVE + 0.3, f"hidden {seen:.2f} s, longer than negative_timeout ({NEGATIVE} s)"
    assert (m / "inc" / "late.h").read_text() == "late"
    # It was found in a listing read again (the first one said "absent"), not by an LSTAT.
    assert logged.count("lstat", d / "late.h") == asked_before


def test_a_lookup_waits_for_the_listing_being_read(logged, data, tmp_path):
    d = data / "dir"
    d.mkdir()
    make_files(d, [f"f{i}" for i in range(30)])
    results = {}
    with FaultProxy(logged.server.port) as proxy:
        proxy.latency(0.1)  # 200 ms a round trip: the listing is in flight long enough to be seen
        mounter = Mounter(Proxied(logged.server, proxy.port), tmp_path)
        fd = None
        try:
            # Every cache 1 s: after the directory is opened (its lookup reads its listing ahead) and
            # that listing has expired, lookups through the open descriptor start from nothing.
            m = mounter(data, ["dcache_timeout=1"])
            fd = os.open(m / "dir", os.O_RDONLY | os.O_DIRECTORY)
            time.sleep(2.0)
            before = {n: logged.count("lstat", d / n) for n in ("f0", "f1", "f2", "nope1", "nope2")}

            def look(name):
                try:
                    results[name] = os.lstat(name, dir_fd=fd).st_size
                except OSError as e:
                    results[name] = -e.errno

            first = threading.Thread(target=look, args=("f0",))
            first.start()  # misses: LSTAT, and the listing starts (OPENDIR, then READDIR)
            time.sleep(0.1)  # the listing is now in flight
            others = [threading.Thread(target=look, args=(n,)) for n in ("f1", "f2", "nope1", "nope2")]
            for t in others:
                t.start()
            for t in [first] + others:
                t.join(timeout=20)
        finally:
            if fd is not None:
                os.close(fd)
            mounter.close()
    assert results == {"f0": 2, "f1": 2, "f2": 2, "nope1": -errno.ENOENT, "nope2": -errno.ENOENT}
    after = {n: logged.count("lstat", d / n) for n in before}
    assert after["f0"] - before["f0"] == 1
    for n in ("f1", "f2", "nope1", "nope2"):
        assert after[n] == before[n], f"{n}: answered by the listing in flight, not its own LSTAT"


def test_removed_and_renamed_names_are_remembered_missing_then_recreations_show(logged, data, mounter):
    # More names than a listing this mount edits (2,000): a removal drops the listing, so only the
    # negative entry left by the removal can answer the lookup that follows.
    d = data / "big"
    d.mkdir()
    make_files(d, [f"n{i:04d}" for i in range(2100)])
    m = mounter(data, OPTIONS)
    assert len(os.listdir(m / "big")) == 2100
    os.unlink(m / "big" / "n0000")
    os.rename(m / "big" / "n0001", m / "big" / "moved")
    os.rename(m / "big" / "n0002", m / "other")
    for name in ("n0000", "n0001", "n0002"):
        assert absent(m / "big" / name)
        assert logged.count("lstat", d / name) == 0, f"{name}: the server's OK already said it is gone"
    assert (m / "big" / "moved").read_text() == "n0001"
    assert (m / "other").read_text() == "n0002"
    # Another client puts the names back: shown once negative_timeout has passed since the removal.
    for name in ("n0000", "n0001"):
        (d / name).write_text("back")
    time.sleep(NEGATIVE + 0.5)
    for name in ("n0000", "n0001"):
        assert (m / "big" / name).read_text() == "back"
    # A create through the mount right after a removal is not refused by the negative entry.
    os.unlink(m / "big" / "n0003")
    with open(m / "big" / "n0003", "x") as f:
        f.write("again")
    assert (m / "big" / "n0003").read_text() == "again"
    assert (d / "n0003").read_text() == "again"


def test_with_cache_no_nothing_is_answered_from_a_listing_or_a_removal(logged, data, mounter):
    d = data / "dir"
    d.mkdir()
    make_files(d, ["a", "b"])
    m = mounter(data, ["cache=no"])
    assert sorted(os.listdir(m / "dir")) == ["a", "b"]
    assert absent(m / "dir" / "c")
    (d / "c").write_text("c")
    assert (m / "dir" / "c").read_text() == "c"  # at once: no listing and no negative entry answer
    os.unlink(m / "dir" / "a")
    (d / "a").write_text("a2")
    assert (m / "dir" / "a").read_text() == "a2"
    assert logged.count("lstat", d / "c") >= 2


# ---- cut 3: a directory's own attribute change keeps its listing ---------------------------------

def test_chmod_and_utimens_of_a_directory_keep_its_listing(logged, data, mounter):
    m = mounter(data, OPTIONS)
    os.mkdir(m / "new", 0o755)  # made here: known empty, then kept current
    os.chmod(m / "new", 0o775)  # unzip and rsync chmod (and utime) each directory they make
    os.utime(m / "new", (1_000_000, 1_000_000))
    (m / "new" / "a").write_text("a")
    os.utime(m / "new", (1_000_000, 1_000_000))
    for name in ("b", "c"):
        assert absent(m / "new" / name)
        assert logged.count("lstat", data / "new" / name) == 0, "answered by the kept listing"
    assert os.stat(m / "new").st_mode & 0o777 == 0o775
    assert os.stat(m / "new").st_mtime == 1_000_000
    assert sorted(os.listdir(m / "new")) == ["a"]
    # Another client adds a name: shown after negative_timeout, like any other.
    (data / "new" / "d").write_text("d")
    time.sleep(NEGATIVE + 0.5)
    assert (m / "new" / "d").read_text() == "d"


def test_a_chmod_that_takes_away_access_drops_the_listing(logged, data, mounter):
    m = mounter(data, OPTIONS)
    os.mkdir(m / "shut", 0o755)
    os.chmod(m / "shut", 0o700)  # read and search bits of group and others go
    assert absent(m / "shut" / "x")
    assert logged.count("lstat", data / "shut" / "x") == 1, "the server is asked"


# ---- cut 7: RENAME_NOREPLACE without the LSTAT where plain RENAME refuses an existing target -------

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
AT_FDCWD = -100


def rename_noreplace(old, new):
    if _libc.renameat2(AT_FDCWD, os.fsencode(str(old)), AT_FDCWD, os.fsencode(str(new)), RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(new))


def test_noreplace_is_checked_first_until_the_server_is_known_to_refuse(logged, data, mounter):
    make_files(data, ["src", "taken"])
    m = mounter(data, OPTIONS)
    rename_noreplace(m / "src", m / "new")
    assert (data / "new").read_text() == "src"
    assert logged.count("lstat", data / "new") >= 1, "nothing learned yet: LSTAT, then rename"
    with pytest.raises(FileExistsError):
        rename_noreplace(m / "new", m / "taken")
    assert (data / "taken").read_text() == "taken" and (data / "new").read_text() == "src"


def test_noreplace_is_one_rename_once_the_server_refused_an_existing_target(logged, data, mounter):
    make_files(data, ["a", "b", "src1", "src2"])
    m = mounter(data, OPTIONS)
    os.rename(m / "a", m / "b")  # a file over a file: plain RENAME, refused, then posix-rename: learned
    assert not (data / "a").exists() and (data / "b").read_text() == "a"
    assert sorted(os.listdir(m)) == ["b", "src1", "src2"]
    rename_noreplace(m / "src1", m / "new1")
    assert (data / "new1").read_text() == "src1"
    assert logged.count("lstat", data / "new1") == 0, "one plain RENAME, no LSTAT before it"
    # Another client takes a name the mount thinks is free (its listing says absent): the server
    # refuses, an LSTAT confirms, EEXIST; nothing on the server changed, and the name shows once
    # the kernel's negative entry (negative_timeout) is over.
    (data / "late").write_text("theirs")
    with pytest.raises(FileExistsError):
        rename_noreplace(m / "src2", m / "late")
    assert (data / "late").read_text() == "theirs" and (data / "src2").read_text() == "src2"
    time.sleep(NEGATIVE + 0.5)
    assert (m / "late").read_text() == "theirs"
    # A plain rename over an existing file still replaces it (posix-rename).
    os.rename(m / "src2", m / "late")
    assert (data / "late").read_text() == "src2" and not (data / "src2").exists()


# ---- cut 8: a walk's readdir served from the listing read ahead, within negative_timeout ----------

def test_a_walk_opens_subdirectories_from_their_listings_read_ahead(logged, data, mounter):
    tree = data / "tree"
    for i in range(3):
        (tree / f"d{i}").mkdir(parents=True)
        make_files(tree / f"d{i}", ["a", "b"])
    m = mounter(data, ["negative_timeout=4"])
    assert sorted(os.listdir(m / "tree")) == ["d0", "d1", "d2"]  # reads d0..d2 ahead
    assert wait_until(lambda: all(logged.count("opendir", tree / f"d{i}") == 1 for i in range(3)), timeout=5)
    time.sleep(2.5)  # a walk that reads every file on the way (grep -r) gets to d0 seconds later
    assert sorted(os.listdir(m / "tree" / "d0")) == ["a", "b"]
    assert logged.count("opendir", tree / "d0") == 1, "served from the listing read ahead"
    # Another client adds a name: a readdir shows it once negative_timeout has passed since the reading.
    (tree / "d1" / "new").write_text("n")
    time.sleep(2.0)
    assert sorted(os.listdir(m / "tree" / "d1")) == ["a", "b", "new"]
    assert logged.count("opendir", tree / "d1") == 2


def test_a_walk_keeps_the_next_subdirectories_listings_young(logged, data, mounter):
    """A walk that reads files on the way gets to later subdirectories after their listings read
    with the parent stopped serving readdirs (negative_timeout here): opening one subdirectory after
    another reads the next ones' listings again ahead of the walk, so each readdir is served from a
    listing read moments before, one that shows what another client changed meanwhile."""
    tree = data / "tree"
    for i in range(6):
        (tree / f"d{i}").mkdir(parents=True)
        make_files(tree / f"d{i}", ["a", "b"])
    m = mounter(data, ["negative_timeout=2"])
    assert sorted(os.listdir(m / "tree")) == [f"d{i}" for i in range(6)]
    order = os.listdir(tree)  # the server's listing order, which the walk follows
    assert wait_until(lambda: all(logged.count("opendir", tree / d) == 1 for d in order), timeout=5)
    time.sleep(2.5)  # past negative_timeout: those listings no longer serve a readdir
    (tree / order[2] / "new").write_text("n")  # another client
    assert sorted(os.listdir(m / "tree" / order[0])) == ["a", "b"]
    assert sorted(os.listdir(m / "tree" / order[1])) == ["a", "b"]  # a walk: the next ones are read again
    assert wait_until(lambda: logged.count("opendir", tree / order[2]) == 2, timeout=5), "read again ahead"
    assert sorted(os.listdir(m / "tree" / order[2])) == ["a", "b", "new"]
    assert logged.count("opendir", tree / order[2]) == 2, "served from the listing read again ahead"
