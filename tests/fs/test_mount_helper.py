"""mount(8), /etc/fstab and systemd through mount.sftpfs (mount-helper/).

The real mount(8) finds helpers only in /sbin, so the `helpers` fixture links /sbin/mount.sftpfs and
/sbin/mount.fuse.sftpfs to copies of this build's binaries (in a directory every user can read), under a
lock shared with every other test run on the machine, and removes them afterwards. Tests that need
/etc/fstab or the system log to be their own run mount in a private mount namespace (unshare -m) where
a temp file is bind-mounted over /etc/fstab, or /dev/log points at a socket the test reads.
Every test unmounts what it mounted and checks that no sftpfs process is left.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (HELPER_LOCK, ROOT, TEST_USER_LOCK, helper_binary, is_mounted, machine_lock, private_sshd,
                      sftpfs_binary, wait_until)
from test_cli import clean_env, processes_mentioning

TIMEOUT = 60
TEST_USER = "sftpfs-test"


def world_readable_dir(prefix) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


@pytest.fixture(scope="module")
def helpers():
    """/sbin/mount.sftpfs and /sbin/mount.fuse.sftpfs -> copies of this build's helper and sftpfs."""
    bin_dir = world_readable_dir("sftpfs-helper-bin-")
    for source in (helper_binary(), sftpfs_binary()):
        shutil.copy2(source, bin_dir)
    # The sanitizer build reads its leak suppressions as whatever user runs it.
    shutil.copy2(ROOT / "tests" / "support" / "lsan.supp", bin_dir)
    links = [Path("/sbin/mount.sftpfs"), Path("/sbin/mount.fuse.sftpfs")]
    try:
        with machine_lock(HELPER_LOCK):
            for link in links:
                if link.exists() and not link.is_symlink():
                    pytest.fail(f"{link} is installed on this machine (the sftpfs package?): remove it to run "
                                "these tests")
                if link.is_symlink():
                    link.unlink()  # left by an interrupted run
                link.symlink_to(bin_dir / "mount.sftpfs")
            try:
                yield bin_dir
            finally:
                for link in links:
                    if link.is_symlink():
                        link.unlink()
    finally:
        shutil.rmtree(bin_dir, ignore_errors=True)


def mount_env(home: Path, helpers_dir: Path):
    env = clean_env(home)
    if "LSAN_OPTIONS" in env:
        env["LSAN_OPTIONS"] = f"suppressions={helpers_dir / 'lsan.supp'}"
    return env


def ssh_options(sshd) -> str:
    return (f"Port={sshd.port},IdentityFile={sshd.key},UserKnownHostsFile={sshd.known_hosts},BatchMode=yes")


def mounted_entry(mountpoint):
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == str(mountpoint):
                return fields
    return None


def unmount(mountpoint, command=("umount",)):
    """Unmounts with `command` (asserting it works) and waits for the sftpfs process to end."""
    result = subprocess.run([*command, str(mountpoint)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mountpoint)
    assert wait_until(lambda: not processes_mentioning(str(mountpoint)), timeout=15), \
        f"sftpfs left: {processes_mentioning(str(mountpoint))}"


def cleanup(mountpoint):
    """Whatever a failing test left: unmount lazily, end processes that name the mount point (by pid)."""
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
    for pid in processes_mentioning(str(mountpoint)):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


@pytest.fixture
def mountpoint(tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    cleanup(point)


def write_fstab(path: Path, *lines) -> Path:
    path.write_text("# test fstab\n" + "".join(line + "\n" for line in lines))
    return path


# ---- mount -t, mount -T with fstab lines, mount.fuse3 ----

@pytest.mark.parametrize("fstype", ["sftpfs", "fuse.sftpfs"])
@pytest.mark.parametrize("how", ["mount -t", "mount -T fstab"], ids=["mount-t", "mount-T-fstab"])
def test_mount_through_mount8(helpers, sshd, remote, mountpoint, tmp_path, how, fstype):
    (remote / "hello.txt").write_text("hello\n")
    source = f"root@127.0.0.1:{remote}"
    if how == "mount -t":
        command = ["mount", "-t", fstype, source, str(mountpoint), "-o", ssh_options(sshd)]
    else:
        # Every fstab word a line may carry: mount and systemd use them, sftpfs must not trip over them.
        fstab = write_fstab(tmp_path / "fstab", f"{source} {mountpoint} {fstype} noauto,_netdev,nofail,"
                            f"x-systemd.automount,x-systemd.mount-timeout=30,comment=test,{ssh_options(sshd)} 0 0")
        command = ["mount", "-T", str(fstab), str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                            env=mount_env(tmp_path / "home", helpers))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # mount(8) returned only once the filesystem was there (systemd's .mount units rely on it).
    entry = mounted_entry(mountpoint)
    assert entry is not None
    assert entry[0] == source and entry[2] == "fuse.sftpfs"
    # As mount(8) gives every filesystem, and mount.fuse3 FUSE ones: dev and suid for root.
    assert "nosuid" not in entry[3].split(",") and "nodev" not in entry[3].split(",")
    assert (mountpoint / "hello.txt").read_text() == "hello\n"
    (mountpoint / "written.txt").write_text("through mount(8)\n")
    assert (remote / "written.txt").read_text() == "through mount(8)\n"
    daemons = processes_mentioning(str(mountpoint))
    assert len(daemons) == 1 and os.readlink(f"/proc/{daemons[0]}/exe") == str(helpers / "sftpfs")
    unmount(mountpoint)


def test_mount_fuse3_runs_sftpfs_from_path(helpers, sshd, remote, mountpoint, tmp_path):
    """Without mount.fuse.sftpfs, type fuse.sftpfs goes through mount.fuse3, which runs `sftpfs` from PATH
    with the options it keeps (it adds dev,suid): sftpfs takes them."""
    (remote / "f").write_text("via mount.fuse3\n")
    env = mount_env(tmp_path / "home", helpers)
    env["PATH"] = f"{helpers}:{env.get('PATH', '/usr/bin:/bin')}"
    result = subprocess.run(["/sbin/mount.fuse3", f"root@127.0.0.1:{remote}", str(mountpoint), "-t", "fuse.sftpfs",
                             "-o", f"_netdev,nofail,{ssh_options(sshd)}"],
                            capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stderr
    assert (mountpoint / "f").read_text() == "via mount.fuse3\n"
    unmount(mountpoint)


def test_nosuid_nodev_reach_the_kernel(helpers, sshd, remote, mountpoint, tmp_path):
    result = subprocess.run(["mount", "-t", "sftpfs", f"root@127.0.0.1:{remote}", str(mountpoint),
                             "-o", f"nosuid,nodev,ro,{ssh_options(sshd)}"],
                            capture_output=True, text=True, timeout=TIMEOUT, env=mount_env(tmp_path / "home", helpers))
    assert result.returncode == 0, result.stderr
    flags = mounted_entry(mountpoint)[3].split(",")
    assert {"nosuid", "nodev", "ro"} <= set(flags), flags
    unmount(mountpoint)


def test_fake_mount_checks_and_starts_nothing(helpers, sshd, remote, mountpoint, tmp_path):
    env = mount_env(tmp_path / "home", helpers)
    good = subprocess.run(["mount", "-f", "-v", "-t", "sftpfs", f"root@127.0.0.1:{remote}", str(mountpoint),
                           "-o", ssh_options(sshd)], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert good.returncode == 0, good.stderr
    assert f"mount.sftpfs: {helpers / 'sftpfs'} 'root@127.0.0.1:{remote}' '{mountpoint}'" in good.stderr
    bad = subprocess.run(["mount", "-f", "-t", "sftpfs", f"root@127.0.0.1:{remote}", str(mountpoint),
                          "-o", "max_conns=lots"], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert bad.returncode != 0
    assert "bad value 'lots' for max_conns" in bad.stderr
    assert not is_mounted(mountpoint) and not processes_mentioning(str(mountpoint))


def test_sloppy_mount_drops_unknown_options(helpers, sshd, remote, mountpoint, tmp_path):
    result = subprocess.run(["mount", "-s", "-t", "sftpfs", f"root@127.0.0.1:{remote}", str(mountpoint),
                             "-o", f"frobnicate=3,{ssh_options(sshd)}"],
                            capture_output=True, text=True, timeout=TIMEOUT, env=mount_env(tmp_path / "home", helpers))
    assert result.returncode == 0, result.stderr
    assert f"mount.sftpfs: {mountpoint}: ignoring unknown option 'frobnicate=3' (sloppy mount, -s)" in result.stderr
    assert is_mounted(mountpoint)
    unmount(mountpoint)


# ---- a wrong option: named on stderr and in the system log, nothing mounted ----

class SyslogSocket:
    """A datagram socket that stands in for /dev/log inside a private mount namespace."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.sock.settimeout(0.2)

    def messages(self):
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode(errors="replace"))
            except (socket.timeout, BlockingIOError):
                return out

    def close(self):
        self.sock.close()


def in_private_namespace(script: str, env=None, fstab: Path = None, syslog: Path = None, timeout=TIMEOUT):
    """Runs `script` (bash) in a private mount namespace with a /dev of its own (symlinks to the real
    one, and /dev/fuse usable by every user as udev makes it on Debian; in containers it is often
    root's only), /etc/fstab bind-mounted from `fstab`, /dev/log a symlink to `syslog`, and a private
    libmount utab. Nothing of it is seen outside, and it ends with the script."""
    olddev = world_readable_dir("sftpfs-olddev-")  # other users follow the symlinks through it
    setup = ["set -e", "mkdir -p /run/mount", "mount -t tmpfs -o mode=755 tmpfs /run/mount",
             f"mount --rbind /dev '{olddev}'", "mount -t tmpfs -o mode=755 tmpfs /dev",
             f"for f in '{olddev}'/*; do ln -s \"$f\" /dev/; done",
             "rm -f /dev/fuse /dev/log", "mknod -m 666 /dev/fuse c 10 229"]
    if syslog:
        setup.append(f"ln -s '{syslog}' /dev/log")
    if fstab:
        setup.append(f"mount --bind '{fstab}' /etc/fstab")
    full = "\n".join(setup) + "\nset +e\n" + script
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", full],
                              capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        olddev.rmdir()  # the namespace and its mounts are gone with the script


def script_values(stdout: str) -> dict:
    """key=value lines a namespace script printed (a key seen twice keeps every value)."""
    values = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("fstype", ["sftpfs", "fuse.sftpfs"])
@pytest.mark.parametrize("options, named", [
    ("frobnicate", "unknown option 'frobnicate'"),
    ("max_conns=0", "max_conns must be at least 1"),
    ("setuid=no-such-user-sftpfs", "setuid=no-such-user-sftpfs: no such user"),
], ids=["unknown", "bad-value", "no-such-user"])
def test_wrong_option_in_fstab_is_named_and_logged(helpers, sshd, remote, mountpoint, tmp_path, fstype, options,
                                                    named):
    fstab = write_fstab(tmp_path / "fstab", f"root@127.0.0.1:{remote} {mountpoint} {fstype} "
                                            f"_netdev,{options},{ssh_options(sshd)} 0 0")
    log = SyslogSocket(tmp_path / "log")
    try:
        result = in_private_namespace(f"mount -T '{fstab}' '{mountpoint}'; echo \"rc=$?\"\n"
                                      f"grep -c ' {mountpoint} ' /proc/self/mounts || true",
                                      env=mount_env(tmp_path / "home", helpers), syslog=log.path)
        logged = log.messages()
    finally:
        log.close()
    program = "mount.sftpfs" if fstype == "sftpfs" else "mount.fuse.sftpfs"
    lines = result.stdout.split()
    assert lines[0] != "rc=0" and lines[1] == "0", result.stdout + result.stderr  # failed, and no mount
    assert f"{program}: {mountpoint}: " in result.stderr and named in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith("; nothing was mounted")
    matching = [m for m in logged if f"{program}[" in m and named in m]
    assert matching, f"not in the system log: {logged}"
    assert matching[0].startswith("<27>")  # daemon.err
    assert not processes_mentioning(str(mountpoint))


# ---- systemd: the fstab generator's units ----

GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"


def unit_name(path, suffix):
    return subprocess.run(["systemd-escape", "--path", f"--suffix={suffix}", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def read_unit(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def systemd_dependencies(unit_dir: Path, unit: str) -> dict:
    """The dependencies systemd itself gives `unit` (implicit ones included), from `systemd --test`, which
    loads units without being pid 1 (and refuses to run as root)."""
    readable = world_readable_dir("sftpfs-units-")
    try:
        shutil.copytree(unit_dir, readable / "units", symlinks=True)
        for path in [readable / "units", *(readable / "units").rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"SYSTEMD_UNIT_PATH": f"{readable / 'units'}:/lib/systemd/system", "PATH": "/usr/bin:/bin"}
        dump = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               "/lib/systemd/systemd", "--test", "--system", "--no-pager", f"--unit={unit}"],
                              capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd="/").stdout
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    deps, inside = {}, False
    for line in dump.splitlines():
        line = line.strip()
        if line.startswith("-> Unit "):
            inside = line == f"-> Unit {unit}:"
        elif inside and ": " in line:
            key, value = line.split(": ", 1)
            deps.setdefault(key, set()).add(value.split(" (")[0])
    assert deps, f"systemd --test did not show {unit}"
    return deps


def test_fstab_generator_units_mount_after_the_network(helpers, sshd, remote, tmp_path):
    (remote / "boot.txt").write_text("mounted as systemd would\n")
    automounted = tmp_path / "srv"
    automounted.mkdir()
    other = tmp_path / "other"
    fstab = write_fstab(tmp_path / "fstab",
                        f"root@127.0.0.1:{remote} {automounted} sftpfs noauto,x-systemd.automount,_netdev,"
                        f"{ssh_options(sshd)} 0 0",
                        f"alice@example.org: {other} fuse.sftpfs _netdev,nofail,setuid=alice 0 0")
    out = tmp_path / "units"
    out.mkdir()
    env = {"SYSTEMD_FSTAB": str(fstab), "PATH": "/usr/bin:/bin"}
    try:
        subprocess.run([GENERATOR, str(out), str(out), str(out)], check=True, env=env, timeout=TIMEOUT)
        mount_unit, automount_unit = unit_name(automounted, "mount"), unit_name(automounted, "automount")
        # _netdev: both belong to remote-fs.target, not local-fs.target; noauto + automount: only the
        # automount unit is pulled in at boot, and it triggers the mount.
        assert (out / "remote-fs.target.requires" / automount_unit).is_symlink()
        assert (out / "remote-fs.target.wants" / unit_name(other, "mount")).is_symlink()
        assert not (out / "local-fs.target.requires").exists() or not any((out / "local-fs.target.requires").iterdir())
        mount = read_unit(out / mount_unit)
        assert mount["What"] == [f"root@127.0.0.1:{remote}"] and mount["Type"] == ["sftpfs"]
        assert read_unit(out / automount_unit)["Where"] == [str(automounted)]
        deps = systemd_dependencies(out, mount_unit)
        assert "network-online.target" in deps["Wants"] and "network-online.target" in deps["After"]
        assert "remote-fs-pre.target" in deps["After"] and "remote-fs.target" in deps["Before"]
        assert automount_unit in deps["TriggeredBy"]
        assert mount_unit in systemd_dependencies(out, automount_unit)["Triggers"]

        # What the .mount unit runs when the automount point is first used: mount What Where -t Type -o
        # Options. It returns once mounted, so the access that triggered it finds the files.
        result = subprocess.run(["mount", mount["What"][0], mount["Where"][0], "-t", mount["Type"][0],
                                 "-o", mount["Options"][0]], capture_output=True, text=True, timeout=TIMEOUT,
                                env=mount_env(tmp_path / "home", helpers))
        assert result.returncode == 0, result.stderr
        assert (automounted / "boot.txt").read_text() == "mounted as systemd would\n"
        unmount(automounted)
    finally:
        cleanup(automounted)


# ---- setuid=USER, a user's own mount, ProxyJump: as the test user sftpfs-test with its own ~/.ssh ----

class UserSetup:
    """sftpfs-test's ~/.ssh for these tests: a key (fstab_key) authorized on two private sshds, their host
    keys in known_hosts, and a config naming them (target, jump). Its previous ~/.ssh is put back after."""

    def __init__(self, target, jump):
        if subprocess.run(["id", TEST_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(TEST_USER)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        self.home.mkdir(exist_ok=True)
        os.chown(self.home, self.uid, self.gid)
        self.home.chmod(0o755)
        self.ssh = self.home / ".ssh"
        self.saved = self.home / ".ssh.saved-by-sftpfs-tests"
        if self.ssh.exists() and not self.saved.exists():
            self.ssh.rename(self.saved)
        shutil.rmtree(self.ssh, ignore_errors=True)
        self.ssh.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fstab", "-f", str(self.ssh / "fstab_key")],
                       check=True)
        shutil.copy(self.ssh / "fstab_key.pub", self.ssh / "authorized_keys")
        (self.ssh / "known_hosts").write_text(Path(target.known_hosts).read_text() + Path(jump.known_hosts).read_text())
        (self.ssh / "config").write_text(f"Host target\n  HostName 127.0.0.1\n  Port {target.port}\n"
                                         f"Host jump\n  HostName 127.0.0.1\n  Port {jump.port}\n"
                                         f"  IdentityFile ~/.ssh/fstab_key\n  BatchMode yes\n")
        self.marker = self.home / "in-the-remote-home.txt"
        self.marker.write_text(f"{TEST_USER}'s remote home\n")
        for path in [self.ssh, *self.ssh.iterdir(), self.marker]:
            os.chown(path, self.uid, self.gid)

    def groups(self):
        return sorted(os.getgrouplist(TEST_USER, self.gid))

    def restore(self):
        shutil.rmtree(self.ssh, ignore_errors=True)
        self.marker.unlink(missing_ok=True)
        if self.saved.exists():
            self.saved.rename(self.ssh)


USER_SSHD_CONFIG = ["AuthorizedKeysFile %h/.ssh/authorized_keys"]  # the user's own, read as the user


@pytest.fixture(scope="module")
def test_user(helpers):
    with private_sshd("sftpfs-user-target-", USER_SSHD_CONFIG) as target, \
            private_sshd("sftpfs-user-jump-", USER_SSHD_CONFIG) as jump, machine_lock(TEST_USER_LOCK):
        user = UserSetup(target, jump)
        user.target, user.jump = target, jump
        try:
            yield user
        finally:
            user.restore()


@pytest.fixture
def user_mountpoint(test_user):
    base = world_readable_dir("sftpfs-user-mnt-")
    point = base / "mnt"
    point.mkdir()
    os.chown(point, test_user.uid, test_user.gid)  # fusermount3: the user must be able to write to it
    yield point
    cleanup(point)
    shutil.rmtree(base, ignore_errors=True)


# Inside the namespace (where the mount is): the sftpfs daemon serving MOUNTPOINT and what it runs as.
INSPECT_DAEMON = r"""
for p in /proc/[0-9]*; do
  [ "$(readlink $p/exe)" = "$SFTPFS" ] && tr '\0' ' ' < $p/cmdline | grep -q -- "$MOUNTPOINT" || continue
  pid=${p#/proc/}; echo "daemon=$pid"
  awk '/^(Uid|Gid|Groups):/ {k=tolower($1); sub(":", "", k); $1=""; print k "=" substr($0, 2)}' $p/status
  tr '\0' '\n' < $p/environ | grep -E '^(HOME|USER|LOGNAME|SSH_AUTH_SOCK)=' | sed 's/^/env_/'
  for c in /proc/[0-9]*; do
    [ "$(awk '{print $4}' $c/stat 2>/dev/null)" = "$pid" ] || continue
    echo "child=$(tr '\0' ' ' < $c/cmdline)"; echo "child_uid=$(awk '/^Uid:/ {print $2}' $c/status)"
  done
done
"""


def as_user(user) -> str:
    return f"setpriv --reuid={user.uid} --regid={user.gid} --init-groups"


def user_scenario(helpers, user, mountpoint, mount_command, env, unmount_command="umount", fstab=None):
    """Mounts with `mount_command` in a private namespace, reads the marker through the mount as the user
    (without allow_other nobody else may, root included), inspects the daemon, unmounts with
    `unmount_command`; returns what the script printed."""
    script = f"""
export SFTPFS='{helpers / "sftpfs"}' MOUNTPOINT='{mountpoint}'
{mount_command}; echo "mount=$?"
echo "entry=$(grep " $MOUNTPOINT " /proc/self/mounts)"
echo "read=$({as_user(user)} cat "$MOUNTPOINT/in-the-remote-home.txt")"
{INSPECT_DAEMON}
{unmount_command} "$MOUNTPOINT"; echo "umount=$?"
echo "left=$(grep -c " $MOUNTPOINT " /proc/self/mounts)"
"""
    result = in_private_namespace(script, env=env, fstab=fstab)
    values = script_values(result.stdout)
    assert values.get("mount") == ["0"], result.stdout + result.stderr
    assert values["umount"] == ["0"] and values["left"] == ["0"], result.stdout + result.stderr
    assert wait_until(lambda: not processes_mentioning(str(mountpoint)), timeout=15)
    return values, result


def test_setuid_mount_uses_that_users_keys_known_hosts_and_config(helpers, test_user, user_mountpoint, tmp_path):
    # "target" exists only in the user's ~/.ssh/config; the key only in the user's ~/.ssh (relative to its
    # home, given as fstab does); the host keys only in the user's known_hosts. Root's agent is not theirs.
    fstab = write_fstab(tmp_path / "fstab", f"target: {user_mountpoint} sftpfs "
                        "setuid=sftpfs-test,IdentityFile=.ssh/fstab_key,IdentitiesOnly=yes,_netdev 0 0")
    env = mount_env(tmp_path / "root-home", helpers)
    env["SSH_AUTH_SOCK"] = str(tmp_path / "roots-agent.sock")
    values, result = user_scenario(helpers, test_user, user_mountpoint, f"mount -T '{fstab}' '{user_mountpoint}'", env)
    assert values["read"] == [f"{TEST_USER}'s remote home"], result.stdout + result.stderr
    entry = values["entry"][0].split()
    assert entry[2] == "fuse.sftpfs" and f"user_id={test_user.uid}" in entry[3].split(","), entry
    assert len(values["daemon"]) == 1
    assert values["uid"] == [" ".join([str(test_user.uid)] * 4)] and values["gid"] == [" ".join([str(test_user.gid)] * 4)]
    assert sorted(int(g) for g in values["groups"][0].split()) == test_user.groups()
    assert values["env_HOME"] == [str(test_user.home)]
    assert values["env_USER"] == [TEST_USER] and values["env_LOGNAME"] == [TEST_USER]
    assert "env_SSH_AUTH_SOCK" not in values


def test_proxy_jump_from_an_fstab_line(helpers, test_user, user_mountpoint, tmp_path):
    fstab = write_fstab(tmp_path / "fstab", f"target: {user_mountpoint} fuse.sftpfs "
                        "setuid=sftpfs-test,ProxyJump=jump,IdentityFile=~/.ssh/fstab_key,_netdev 0 0")
    jump_log = test_user.jump.dir / "sshd.log"
    accepted = f"Accepted publickey for {TEST_USER}"
    before = jump_log.read_text().count(accepted)
    values, result = user_scenario(helpers, test_user, user_mountpoint, f"mount -T '{fstab}' '{user_mountpoint}'",
                                   mount_env(tmp_path / "root-home", helpers))
    assert values["read"] == [f"{TEST_USER}'s remote home"], result.stdout + result.stderr
    # Through the jump host: an `ssh -W` child of the daemon, running as the user, let in by the second sshd.
    jumps = [child.split() for child in values.get("child", []) if " -W " in child]
    assert jumps and "jump" in jumps[0], values.get("child")
    assert values["child_uid"] == [str(test_user.uid)] * len(values["child"])
    assert jump_log.read_text().count(accepted) == before + 1


def test_user_mounts_and_unmounts_an_fstab_line_marked_user(helpers, test_user, user_mountpoint, tmp_path):
    """A non-root user runs `mount MOUNTPOINT` for a line of /etc/fstab (a private copy) marked `user`:
    mount(8) runs the helper as that user, sftpfs mounts through fusermount3; the user unmounts it."""
    fstab = write_fstab(tmp_path / "fstab", f"target: {user_mountpoint} sftpfs user,noauto,_netdev,"
                        "IdentityFile=.ssh/fstab_key 0 0")
    fstab.chmod(0o644)
    user = as_user(test_user)
    values, result = user_scenario(helpers, test_user, user_mountpoint, f"{user} mount '{user_mountpoint}'",
                                   mount_env(tmp_path / "root-home", helpers), unmount_command=f"{user} umount",
                                   fstab=fstab)
    assert values["read"] == [f"{TEST_USER}'s remote home"], result.stdout + result.stderr
    entry = values["entry"][0].split()
    # "user" made libmount add noexec,nosuid,nodev; user_id: fusermount3 mounted it for the user.
    assert entry[2] == "fuse.sftpfs", entry
    assert {"nosuid", "nodev", "noexec", f"user_id={test_user.uid}"} <= set(entry[3].split(",")), entry
    assert values["uid"][0].split()[0] == str(test_user.uid)


def fstab_examples(text: str):
    """fstab lines in a document: lines of 6 fields whose third is sftpfs or fuse.sftpfs."""
    lines = []
    for line in text.splitlines():
        fields = line.strip().strip("`").split()
        if len(fields) == 6 and fields[2] in ("sftpfs", "fuse.sftpfs") and fields[4:] == ["0", "0"]:
            lines.append(fields)
    return lines


def test_readme_fstab_example_is_accepted():
    """The fstab line README shows passes the helper's checks (-f: nothing is started)."""
    examples = fstab_examples((ROOT / "README.md").read_text())
    assert examples, "no fstab example in README.md"
    for source, mountpoint, fstype, options, _, _ in examples:
        options = ",".join(o for o in options.split(",") if not o.startswith("setuid="))  # users of this machine
        result = subprocess.run([helper_binary(), source, mountpoint, "-f", "-t", fstype, "-o", options],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, (options, result.stderr)
