"""Fixtures for tests through a real mount: a private sshd on 127.0.0.1 and sftpfs mounts of it.

Everything started here is stopped here, by pid, even when a test fails:
- `sshd` (one per session): tests/support/test-sshd in a temp dir; the "remote" side is a local folder.
  With SFTPFS_TEST_SERVER=NAME it is another SFTP server instead (servers.py: gesftpserver, proftpd,
  rclone, asyncssh, paramiko, dropbear, internal-sftp), and tests marked `needs("feature", ...)` that it
  lacks are skipped: scripts/test-servers.sh runs the filesystem tests that way on every server.
- `remote`: a fresh empty directory on the server side for one test (a local path: check results there).
- `mount`: a factory; mount(remote_path, options=[...]) mounts sftpfs and returns the mount point.
  Every mount is unmounted (fusermount3 -u, lazily if busy) and its process ended at teardown.
The binary is $SFTPFS_BIN, else build/test/sftpfs (the build scripts/test.sh makes).
"""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_SSHD = ROOT / "tests" / "support" / "test-sshd"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (large files); still part of the suite")
    config.addinivalue_line("markers", "needs(*features): skipped on a server that lacks one (servers.FEATURES)")
    config.addinivalue_line("markers", "openssh_only: needs OpenSSH's sshd (its config, its processes)")


# Times a test measured (detection, recovery, bounds): printed at the end of the run whatever -q/-s say.
MEASUREMENTS = []


def measured(text: str):
    MEASUREMENTS.append(text)
    print(text)


def pytest_terminal_summary(terminalreporter):
    if MEASUREMENTS:
        terminalreporter.section("measured")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


def selected_server() -> str:
    return os.environ.get("SFTPFS_TEST_SERVER", "openssh")


def pytest_collection_modifyitems(config, items):
    import servers
    name = selected_server()
    features = servers.FEATURES[name]
    for item in items:
        for marker in item.iter_markers("needs"):
            missing = [f for f in marker.args if f not in features]
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"{name} lacks {', '.join(missing)}"))
        if name != "openssh" and item.get_closest_marker("openssh_only"):
            item.add_marker(pytest.mark.skip(reason=f"OpenSSH's sshd only (running on {name})"))


def sftpfs_binary() -> str:
    path = os.environ.get("SFTPFS_BIN") or str(ROOT / "build" / "test" / "sftpfs")
    if not os.access(path, os.X_OK):
        pytest.fail(f"sftpfs binary not found at {path}: build it or set SFTPFS_BIN")
    return path


def helper_binary() -> str:
    """mount.sftpfs: $SFTPFS_HELPER, else beside the sftpfs binary (the build makes both)."""
    path = os.environ.get("SFTPFS_HELPER") or str(Path(sftpfs_binary()).parent / "mount.sftpfs")
    if not os.access(path, os.X_OK):
        pytest.fail(f"mount.sftpfs not found at {path}: build it or set SFTPFS_HELPER")
    return path


@contextlib.contextmanager
def machine_lock(path):
    """An exclusive lock shared by every test run on this machine (several of us run tests at once)."""
    import fcntl
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Held while /sbin/mount.sftpfs and /sbin/mount.fuse.sftpfs are a test's (the mount-helper tests link
# them to this build, the package test installs them); taken before TEST_USER_LOCK when both are needed.
HELPER_LOCK = "/tmp/sftpfs-mount-helper.lock"
# Held while a test changes the test user sftpfs-test (password, ~/.ssh).
TEST_USER_LOCK = "/tmp/sftpfs-test-user.lock"


def is_mounted(mountpoint) -> bool:
    target = os.path.realpath(str(mountpoint))
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == target and fields[2].startswith("fuse"):
                return True
    return False


def wait_until(predicate, timeout=20.0, interval=0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Sshd:
    def __init__(self, directory: Path, extra_config=()):
        """extra_config: sshd_config lines placed before the defaults (sshd keeps the first value)."""
        self.dir = directory
        self.port = int(subprocess.check_output([str(TEST_SSHD), "start", str(directory), *extra_config],
                                                text=True).strip())
        self.pid = int((directory / "sshd.pid").read_text())
        self.key = str(directory / "id_ed25519")
        self.known_hosts = str(directory / "known_hosts")
        self.remote_base = directory / "remote"
        self.remote_base.mkdir(exist_ok=True)

    def server_path(self, local_path) -> str:
        """The path sftpfs is given for a local directory of the server (servers.py: chrooted ones differ)."""
        return str(local_path)

    def ssh_options(self):
        """The -p/-o arguments that let sftpfs (or sshfs) reach this server as root."""
        return ["-p", str(self.port), "-o", f"IdentityFile={self.key}", "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def stop(self):
        subprocess.run([str(TEST_SSHD), "stop", str(self.dir)], check=False)

    def restart(self, new_host_keys=False):
        """Kills the server and its sessions (as a crash would) and starts it again on the same port;
        new_host_keys=True makes new host keys first (self.known_hosts then holds the new ones)."""
        args = [str(TEST_SSHD), "restart", str(self.dir)] + (["new-host-keys"] if new_host_keys else [])
        port = int(subprocess.check_output(args, text=True).strip())
        assert port == self.port, f"test-sshd restarted on port {port}, not {self.port}"
        self.pid = int((self.dir / "sshd.pid").read_text())


@contextlib.contextmanager
def private_sshd(prefix, extra_config=()):
    """A private sshd in a new temp dir; stopped (by pid) and removed whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server = Sshd(directory, extra_config)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd():
    name = selected_server()
    if name == "openssh":
        with private_sshd("sftpfs-fs-test-") as server:
            yield server
    else:
        import servers
        with servers.private_server(name) as server:
            yield server


@pytest.fixture
def remote(sshd, request) -> Path:
    name = request.node.name.replace("/", "_").replace("[", "_").replace("]", "_")
    path = sshd.remote_base / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


class Proxied:
    """A test server as reached through a proxy on `port` (a FaultProxy): what a Mounter needs of it.
    The host key is not checked (a test server, reached on the proxy's port)."""

    def __init__(self, server, port):
        self.server, self.port = server, port

    def server_path(self, local_path) -> str:
        return self.server.server_path(local_path)

    def ssh_options(self):
        return ["-p", str(self.port), "-o", f"IdentityFile={self.server.key}", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null"]


class Mounter:
    def __init__(self, sshd: Sshd, workdir: Path):
        self.sshd = sshd
        self.workdir = workdir
        self.mounts = []  # (mountpoint, Popen or None)

    def command(self, remote_path, mountpoint, options=(), extra_args=()):
        cmd = [sftpfs_binary(), f"root@127.0.0.1:{self.sshd.server_path(remote_path)}", str(mountpoint)] + self.sshd.ssh_options()
        for opt in options:
            cmd += ["-o", opt]
        return cmd + list(extra_args)

    def __call__(self, remote_path, options=(), mountpoint=None, foreground=True, extra_args=()) -> Path:
        """Mounts remote_path; foreground=True runs `sftpfs -f` as our child (pid known);
        False runs it as a user would (it daemonizes once mounted)."""
        if mountpoint is None:
            mountpoint = Path(tempfile.mkdtemp(prefix="mnt-", dir=self.workdir))
        mountpoint = Path(mountpoint)
        cmd = self.command(remote_path, mountpoint, options, extra_args)
        if foreground:
            log = open(self.workdir / f"{mountpoint.name}.log", "w")
            proc = subprocess.Popen(cmd + ["-f"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            self.mounts.append((mountpoint, proc))
            if not wait_until(lambda: is_mounted(mountpoint) or proc.poll() is not None):
                pytest.fail(f"sftpfs did not mount {mountpoint} in time")
            if not is_mounted(mountpoint):
                log.flush()
                pytest.fail(f"sftpfs exited ({proc.returncode}) without mounting:\n"
                            + (self.workdir / f"{mountpoint.name}.log").read_text())
        else:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            self.mounts.append((mountpoint, None))
            if result.returncode != 0 or not is_mounted(mountpoint):
                pytest.fail(f"sftpfs failed ({result.returncode}): {result.stderr}")
        return mountpoint

    def unmount(self, mountpoint):
        """Unmounts one mount made by this factory and waits for its process to end."""
        for i, (point, proc) in enumerate(self.mounts):
            if Path(point) == Path(mountpoint):
                self._teardown(point, proc)
                del self.mounts[i]
                return
        raise ValueError(f"{mountpoint} was not mounted by this fixture")

    def _teardown(self, mountpoint, proc):
        if is_mounted(mountpoint):
            if subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True).returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)
        if proc is not None:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=5)
        else:
            # A daemonized sftpfs is not our child; it exits by itself once unmounted.
            wait_until(lambda: not is_mounted(mountpoint), timeout=10)

    def close(self):
        for mountpoint, proc in reversed(self.mounts):
            self._teardown(mountpoint, proc)
        self.mounts.clear()


@pytest.fixture
def mount(sshd, tmp_path):
    mounter = Mounter(sshd, tmp_path)
    try:
        yield mounter
    finally:
        mounter.close()
