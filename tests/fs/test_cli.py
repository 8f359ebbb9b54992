"""The sftpfs command line through the real binary against the test sshd.

Every bad input must exit non-zero with one line on stderr that names the problem, and leave no mount
and no sftpfs process behind. A good mount returns 0 once it is mounted and goes away when unmounted.
"""
import errno
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import is_mounted, sftpfs_binary, wait_until

TIMEOUT = 60


def clean_env(home: Path):
    """No agent, no askpass, and a HOME without keys or ssh config: only what a test gives is used."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY",
                                                            "WAYLAND_DISPLAY", "SSH_ASKPASS_REQUIRE")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    return env


def processes_mentioning(text: str):
    """Pids of live processes whose command line contains `text` (our unique mount point)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


class Cli:
    def __init__(self, sshd, tmp_path: Path):
        self.sshd = sshd
        self.tmp = tmp_path
        self.env = clean_env(tmp_path / "home")
        self.mountpoint = tmp_path / "mnt"
        self.mountpoint.mkdir()

    def ssh_args(self, key=None, known_hosts=None, port=None):
        return ["-p", str(port or self.sshd.port),
                "-o", f"IdentityFile={key or self.sshd.key}",
                "-o", f"UserKnownHostsFile={known_hosts or self.sshd.known_hosts}",
                "-o", "BatchMode=yes"]

    def run(self, args, stdin_text=None):
        return subprocess.run([sftpfs_binary()] + args, input=stdin_text if stdin_text is not None else "",
                              capture_output=True, text=True, timeout=TIMEOUT, env=self.env)

    def expect_failure(self, args, *needles, stdin_text=None, mountpoint=None):
        mountpoint = Path(mountpoint or self.mountpoint)
        result = self.run(args, stdin_text)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0, f"expected failure, got 0; stderr: {result.stderr}"
        assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
        assert lines[0].startswith("sftpfs: "), lines[0]
        for needle in needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        assert not is_mounted(mountpoint)
        assert wait_until(lambda: not processes_mentioning(str(mountpoint)), timeout=10), \
            f"sftpfs processes left: {processes_mentioning(str(mountpoint))}"
        return lines[0]


@pytest.fixture
def cli(sshd, tmp_path):
    c = Cli(sshd, tmp_path)
    yield c
    # Whatever a failing test left: unmount, and end processes that name our mount point.
    if is_mounted(c.mountpoint):
        subprocess.run(["fusermount3", "-uz", str(c.mountpoint)], capture_output=True)
    for pid in processes_mentioning(str(c.mountpoint)):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_and_help(cli):
    version = cli.run(["--version"])
    assert version.returncode == 0
    assert "sftpfs version" in version.stdout
    help_ = cli.run(["--help"])
    assert help_.returncode == 0
    for word in ("usage: sftpfs", "idmap", "dir_cache", "allow_other", "StrictHostKeyChecking", "--probe"):
        assert word in help_.stdout


def test_wrong_host_name(cli, remote):
    cli.expect_failure([f"root@no-such-host.invalid:{remote}", str(cli.mountpoint)] + cli.ssh_args(),
                       "no-such-host.invalid", "resolve")


def test_refused_port(cli, remote):
    port = free_port()
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(port=port),
                       "refused", "nothing listens there", f"is {port} the right port? (ssh uses 22)")


class NotSsh:
    """A listener on a free 127.0.0.1 port that answers every connection as something other than sshd."""

    def __init__(self, greeting: bytes):
        import threading
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                if self.greeting:
                    conn.sendall(self.greeting)
                    conn.settimeout(1)
                    try:
                        conn.recv(4096)  # the client's version line, then hang up as a mail server would
                    except OSError:
                        pass

    def close(self):
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("greeting, said", [
    (b"", "closed the connection without a word"),
    (b"220 mail.example.org ESMTP Postfix\r\n", "its last line was '220 mail.example.org ESMTP Postfix'"),
], ids=["closes", "smtp"])
def test_port_that_is_not_an_ssh_server(cli, remote, greeting, said):
    server = NotSsh(greeting)
    try:
        cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(port=server.port),
                           "not an SSH server", said, f"is {server.port} the right port? (ssh uses 22)")
    finally:
        server.close()


def test_ssh_protocol_1_server_is_named(cli, remote):
    server = NotSsh(b"SSH-1.5-OldServer\r\n")
    try:
        cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(port=server.port),
                           "only SSH protocol 1", "SSH-1.5-OldServer")
    finally:
        server.close()


def test_server_without_sftp_subsystem(cli, remote, monkeypatch):
    from conftest import private_sshd
    monkeypatch.setenv("TEST_SSHD_SFTP_SERVER", "/nonexistent/sftp-server")
    with private_sshd("sftpfs-nosftp-") as server:
        cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)]
                           + cli.ssh_args(port=server.port, key=server.key, known_hosts=server.known_hosts),
                           "closed the SFTP channel", "is the sftp subsystem enabled on the server?")


def test_wrong_user(cli, remote):
    cli.expect_failure([f"no-such-user-sftpfs@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(),
                       "Permission denied", "no-such-user-sftpfs")


def test_wrong_key(cli, remote, tmp_path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(key=key),
                       "Permission denied", "server allows: publickey,password",
                       f"tried: agent: SSH_AUTH_SOCK not set, {key}: not accepted")


def fake_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# Key files people give as IdentityFile that libssh2 cannot read: the message names the format and the
# command that converts it.
def make_key_file(kind: str, directory: Path) -> tuple[Path, list]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "id")], check=True)
    if kind == "rfc4716-public":
        text = subprocess.run(["ssh-keygen", "-e", "-f", str(directory / "id.pub")], check=True,
                              capture_output=True, text=True).stdout
        assert text.startswith("---- BEGIN SSH2 PUBLIC KEY ----")
        path = fake_file(directory / "id_rfc4716", text)
        return path, ["SSH2 (RFC 4716)", "not a private key", f"ssh-keygen -i -f {path}"]
    if kind == "openssh-public":
        path = directory / "id.pub"
        return path, ["OpenSSH public key (ssh-ed25519)", f"needs the private key ({directory / 'id'})"]
    if kind == "putty":
        path = fake_file(directory / "id.ppk", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"
                                              "Comment: test\nPublic-Lines: 2\nAAAA\nAAAA\n")
        return path, ["PuTTY private key", f"puttygen {path} -O private-openssh"]
    if kind == "sshcom-private":
        path = fake_file(directory / "id.ssh2", "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n"
                                               "Comment: \"test\"\nP2/56wAAAI4AAAA=\n"
                                               "---- END SSH2 ENCRYPTED PRIVATE KEY ----\n")
        return path, ["SSH2 (ssh.com) private key", f"ssh-keygen -i -f {path}"]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["rfc4716-public", "openssh-public", "putty", "sshcom-private"])
def test_key_file_libssh2_cannot_read_is_named(cli, remote, tmp_path, kind):
    key, needles = make_key_file(kind, tmp_path)
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(key=key),
                       "Permission denied", *needles)


def test_dead_mount_of_ours_is_named(cli, mount, remote):
    # attr_timeout=0: the kernel asks about the root at once, as it does once a dead mount's cache expired.
    mountpoint = mount(remote, options=["attr_timeout=0"])  # sftpfs -f, our child
    proc = mount.mounts[-1][1]
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(OSError) as dead:
        os.stat(mountpoint)
    assert dead.value.errno == errno.ENOTCONN
    result = cli.run([f"root@127.0.0.1:{remote}", str(mountpoint)] + cli.ssh_args())
    assert result.returncode == 1
    assert result.stderr == (f"sftpfs: mount point {mountpoint}: a previous sftpfs mount is still there but dead "
                             f"(its process has ended); unmount it with: fusermount3 -u {mountpoint}\n")
    assert not processes_mentioning(str(mountpoint))
    # The fixture unmounts it; the message's command is the one that works.
    assert subprocess.run(["fusermount3", "-u", str(mountpoint)]).returncode == 0
    assert not is_mounted(mountpoint)


def test_unknown_host_key(cli, remote, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    line = cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(known_hosts=empty),
                              "SHA256:")
    assert "not known" in line or "unknown" in line


def test_changed_host_key(cli, remote, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    public = (tmp_path / "other_host_key.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{cli.sshd.port} {public[0]} {public[1]}\n")
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args(known_hosts=wrong)
                       + ["-o", "HostKeyAlgorithms=ssh-ed25519"], "SHA256:")


def test_wrong_password(cli, remote):
    args = [f"root@127.0.0.1:{remote}", str(cli.mountpoint), "-p", str(cli.sshd.port),
            "-o", f"UserKnownHostsFile={cli.sshd.known_hosts}",
            "-o", "password_stdin,IdentityAgent=none,PreferredAuthentications=password"]
    cli.expect_failure(args, "Permission denied", stdin_text="not-the-password\n")


def test_missing_remote_path(cli, remote):
    missing = remote / "does-not-exist"
    cli.expect_failure([f"root@127.0.0.1:{missing}", str(cli.mountpoint)] + cli.ssh_args(),
                       f"remote path {missing}", "No such file or directory")


def test_remote_path_is_a_file(cli, remote):
    target = remote / "a-file"
    target.write_text("x")
    cli.expect_failure([f"root@127.0.0.1:{target}", str(cli.mountpoint)] + cli.ssh_args(),
                       str(target), "Not a directory")


def test_missing_mount_point(cli, remote, tmp_path):
    missing = tmp_path / "no-such-mountpoint"
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(missing)] + cli.ssh_args(),
                       str(missing), "does not exist", mountpoint=missing)


def test_mount_point_is_a_file(cli, remote, tmp_path):
    a_file = tmp_path / "plain-file"
    a_file.write_text("")
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(a_file)] + cli.ssh_args(),
                       str(a_file), "not a directory", mountpoint=a_file)


def test_unknown_option(cli, remote):
    line = cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args() + ["-o", "foo"])
    assert line == "sftpfs: unknown option 'foo'; see sftpfs --help"


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_mount_through_proxy_jump(cli, remote):
    # Made before the mount: a name created on the server later may stay hidden for negative_timeout.
    (remote / "from-server.txt").write_text("server side\n")
    # The jump host is the same sshd under another name; everything about it (address, port, user, key,
    # known_hosts) comes from the -F file, which sftpfs hands to the ssh it runs for the jump.
    port = cli.sshd.port
    config = cli.tmp / "jump_ssh_config"
    config.write_text(f"Host jumphost\n"
                      f"  HostName 127.0.0.1\n"
                      f"  Port {port}\n"
                      f"  User root\n"
                      f"  HostKeyAlias [127.0.0.1]:{port}\n"
                      f"  IdentityFile {cli.sshd.key}\n"
                      f"  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {cli.sshd.known_hosts}\n"
                      f"  GlobalKnownHostsFile /dev/null\n")
    result = cli.run([f"root@127.0.0.1:{remote}", str(cli.mountpoint), "-F", str(config)] + cli.ssh_args()
                     + ["-o", "ProxyJump=jumphost"])
    assert result.returncode == 0, result.stderr
    try:
        assert is_mounted(cli.mountpoint)
        daemons = processes_mentioning(str(cli.mountpoint))
        assert len(daemons) == 1, daemons
        # The connection really goes through the jump: an ssh -W child of the daemon, reading our -F file.
        jumps = [p for p in processes_mentioning(str(config)) if p not in daemons]
        assert jumps, "no ssh -W process for the jump"
        for pid in jumps:
            assert parent_pid(pid) == daemons[0]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            assert b"-W" in argv and f"[127.0.0.1]:{port}".encode() in argv and b"jumphost" in argv, argv

        (cli.mountpoint / "via-jump.txt").write_text("through the jump host\n")
        assert (remote / "via-jump.txt").read_text() == "through the jump host\n"
        assert (cli.mountpoint / "from-server.txt").read_text() == "server side\n"
    finally:
        subprocess.run(["fusermount3", "-u", str(cli.mountpoint)], capture_output=True)
    assert not is_mounted(cli.mountpoint)
    assert wait_until(lambda: not processes_mentioning(str(cli.mountpoint)), timeout=15)
    assert wait_until(lambda: not processes_mentioning(str(config)), timeout=15), \
        f"jump ssh left: {processes_mentioning(str(config))}"


def test_proxy_command_that_fails_is_named(cli, remote):
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args()
                       + ["-o", "ProxyCommand=sh -c 'exit 7'"],
                       "ProxyCommand 'sh -c 'exit 7'' exited with status 7 before the SSH handshake")


def test_unsupported_algorithm_list_is_named(cli, remote):
    cli.expect_failure([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args()
                       + ["-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com"],
                       "KexAlgorithms=sntrup761x25519-sha512@openssh.com", "libssh2")


def test_background_mount_and_unmount(cli, remote):
    (remote / "hello.txt").write_text("hello\n")
    result = cli.run([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert is_mounted(cli.mountpoint)  # mounted by the time the command returned
    with open("/proc/mounts") as mounts:
        line = next(l for l in mounts if l.split()[1] == str(cli.mountpoint))
    assert line.split()[0] == f"root@127.0.0.1:{remote}"
    assert line.split()[2] == "fuse.sftpfs"
    assert (cli.mountpoint / "hello.txt").read_text() == "hello\n"
    pids = processes_mentioning(str(cli.mountpoint))
    assert len(pids) == 1, pids
    # The daemon left the caller's session and terminal.
    assert os.getsid(pids[0]) == pids[0]

    subprocess.run(["fusermount3", "-u", str(cli.mountpoint)], check=True)
    assert not is_mounted(cli.mountpoint)
    assert wait_until(lambda: not processes_mentioning(str(cli.mountpoint)), timeout=15)


def test_home_directory_when_no_path(cli):
    # "host:" mounts the remote home: root's home on this machine.
    result = cli.run(["root@127.0.0.1:", str(cli.mountpoint)] + cli.ssh_args())
    assert result.returncode == 0, result.stderr
    try:
        home = os.path.expanduser("~root")
        assert sorted(os.listdir(cli.mountpoint)) == sorted(os.listdir(home))
    finally:
        subprocess.run(["fusermount3", "-u", str(cli.mountpoint)], check=False)
        wait_until(lambda: not processes_mentioning(str(cli.mountpoint)), timeout=15)


def test_probe(cli):
    result = cli.run(["--probe", f"root@127.0.0.1:{cli.sshd.port}", "-o", f"IdentityFile={cli.sshd.key}",
                      "-o", f"UserKnownHostsFile={cli.sshd.known_hosts}", "-o", "BatchMode=yes"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SSH-2.0-OpenSSH" in out
    assert "sftp version:      3" in out
    for extension in ("posix-rename@openssh.com", "statvfs@openssh.com", "hardlink@openssh.com",
                      "fsync@openssh.com", "limits@openssh.com"):
        assert extension in out
    assert "max read length     261120" in out or "max read length" in out
    assert "max packet length" in out
    assert "key exchange:" in out and "cipher:" in out
    assert "round trip:" in out and " ms (median" in out


def test_probe_with_dash_p(cli):
    result = cli.run(["--probe", "root@127.0.0.1"] + cli.ssh_args())
    assert result.returncode == 0, result.stderr
    assert "limits@openssh.com" in result.stdout


def test_put_then_cat_round_trip(cli, remote, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    target = remote / "blob"
    ssh = ["-p", str(cli.sshd.port), "-o", f"IdentityFile={cli.sshd.key}",
           "-o", f"UserKnownHostsFile={cli.sshd.known_hosts}", "-o", "BatchMode=yes"]
    put = subprocess.run([sftpfs_binary(), "--put", f"root@127.0.0.1:{target}"] + ssh, input=data,
                         capture_output=True, timeout=TIMEOUT, env=cli.env)
    assert put.returncode == 0, put.stderr
    assert target.read_bytes() == data  # checked on the server side
    cat = subprocess.run([sftpfs_binary(), "--cat", f"root@127.0.0.1:{target}"] + ssh,
                         capture_output=True, timeout=TIMEOUT, env=cli.env)
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == data
    missing = subprocess.run([sftpfs_binary(), "--cat", f"root@127.0.0.1:{remote}/missing"] + ssh,
                             capture_output=True, text=True, timeout=TIMEOUT, env=cli.env)
    assert missing.returncode != 0
    assert "No such file" in missing.stderr


# ---- password authentication, as the test user "sftpfs-test" (tests/ssh uses the same user and lock) ----

@pytest.fixture
def password_user():
    """Gives sftpfs-test a fresh random password, holding the shared lock so that concurrently running
    tests do not change it underneath."""
    import fcntl
    import secrets
    lock = open("/tmp/sftpfs-test-user.lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if subprocess.run(["id", "sftpfs-test"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", "sftpfs-test"], check=True, capture_output=True)
        password = "Pw-" + secrets.token_urlsafe(15)
        subprocess.run(["chpasswd"], input=f"sftpfs-test:{password}\n", text=True, check=True)
        yield password
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def password_args(cli):
    return ["-p", str(cli.sshd.port), "-o", f"UserKnownHostsFile={cli.sshd.known_hosts}",
            "-o", "IdentityAgent=none,PreferredAuthentications=password"]


def unmount_and_wait(mountpoint):
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
    assert wait_until(lambda: not processes_mentioning(str(mountpoint)), timeout=15)


def test_password_stdin_mounts(cli, password_user):
    result = cli.run(["sftpfs-test@127.0.0.1:", str(cli.mountpoint), "-o", "password_stdin"] + password_args(cli),
                     stdin_text=password_user + "\n")
    assert result.returncode == 0, result.stderr
    try:
        assert is_mounted(cli.mountpoint)
        import pwd
        # The mounted root is the user's remote home: its owner as the server reports it.
        assert os.stat(cli.mountpoint).st_uid == pwd.getpwnam("sftpfs-test").pw_uid
        os.listdir(cli.mountpoint)
    finally:
        unmount_and_wait(cli.mountpoint)


def test_password_prompt_on_the_terminal(cli, password_user):
    """The background child asks on the terminal before detaching; the parent returns once mounted."""
    import pty
    import select
    import time
    args = [sftpfs_binary(), "sftpfs-test@127.0.0.1:", str(cli.mountpoint)] + password_args(cli)
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(args[0], args, cli.env)
    output = b""
    try:
        deadline = time.monotonic() + 30
        while b"password" not in output.lower() and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                output += os.read(fd, 1024)
        assert b"password" in output.lower(), output
        os.write(fd, (password_user + "\n").encode())
        while time.monotonic() < deadline:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    output += os.read(fd, 1024)
                except OSError:
                    pass
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"sftpfs did not return: {output!r}")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, output
        assert password_user.encode() not in output  # not echoed
        assert is_mounted(cli.mountpoint)
    finally:
        os.close(fd)
        unmount_and_wait(cli.mountpoint)


def test_idmap_user_maps_the_remote_user_to_the_local_one(cli, password_user):
    result = cli.run(["sftpfs-test@127.0.0.1:", str(cli.mountpoint), "-o", "password_stdin,idmap=user"]
                     + password_args(cli), stdin_text=password_user + "\n")
    assert result.returncode == 0, result.stderr
    try:
        # The remote home belongs to sftpfs-test (uid 1001 there); locally it shows as the mounting user.
        assert os.stat(cli.mountpoint).st_uid == os.getuid()
    finally:
        unmount_and_wait(cli.mountpoint)


def test_uid_gid_umask_options(cli, remote):
    (remote / "f").write_text("x")
    os.chmod(remote / "f", 0o666)
    result = cli.run([f"root@127.0.0.1:{remote}", str(cli.mountpoint)] + cli.ssh_args()
                     + ["-o", "uid=4321,gid=4322,umask=027"])
    assert result.returncode == 0, result.stderr
    try:
        st = os.stat(cli.mountpoint / "f")
        assert (st.st_uid, st.st_gid) == (4321, 4322)
        assert st.st_mode & 0o777 == 0o640
    finally:
        unmount_and_wait(cli.mountpoint)


@pytest.mark.parametrize("default_permissions", [False, True], ids=["allow_other", "with_default_permissions"])
def test_allow_other_needs_default_permissions(cli, remote, default_permissions):
    """allow_other alone lets every local user act as the remote user (here: nobody reads root's 0600 file),
    so it is warned about; with default_permissions the kernel checks owner and mode."""
    import shutil
    import tempfile
    secret = remote / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    base = Path(tempfile.mkdtemp(prefix="allow-other-"))
    base.chmod(0o755)  # other users must reach the mount point
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    options = "allow_other,default_permissions" if default_permissions else "allow_other"
    try:
        result = cli.run([f"root@127.0.0.1:{remote}", str(mountpoint)] + cli.ssh_args() + ["-o", options])
        assert result.returncode == 0, result.stderr
        warned = "allow_other without default_permissions" in result.stderr
        assert warned == (not default_permissions), result.stderr
        read = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               "cat", str(mountpoint / "secret")], capture_output=True, text=True, timeout=30)
        if default_permissions:
            assert read.returncode != 0 and "Permission denied" in read.stderr, read
        else:
            assert read.stdout == "root only\n"
    finally:
        unmount_and_wait(mountpoint)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("remote_spec", ["root@-oProxyCommand=sh:/srv", "bad host:/srv", "h;touch x:/srv", "[-1::]:/srv"])
def test_host_names_no_host_has_are_refused_before_any_lookup(cli, remote_spec, tmp_path):
    # Were the host used at all, this ProxyCommand would run (and leave its mark) to reach it.
    marker = tmp_path / "proxy-ran"
    cli.expect_failure([remote_spec, str(cli.mountpoint), "-o", f"ProxyCommand=touch {marker}"] + cli.ssh_args(),
                       "invalid host name")
    assert not marker.exists()


def test_debug_output_has_no_alarm_words_when_nothing_failed(mount, remote, tmp_path):
    """-d with common sshfs options and a LogLevel line in the ssh configuration, then ordinary work
    that succeeds (including requests the kernel expects to be refused, such as getxattr)."""
    config = tmp_path / "ssh_config"
    config.write_text("LogLevel ERROR\n")
    mnt = mount(remote, options=["delay_connect", "sshfs_sync", "reconnect"], extra_args=["-d", "-F", str(config)])
    (tmp_path / "src").write_bytes(b"data" * 1000)
    subprocess.run(f"cp '{tmp_path}/src' '{mnt}/f' && ls -l '{mnt}' && cat '{mnt}/f' > /dev/null && "
                   f"mkdir '{mnt}/d' && mv '{mnt}/f' '{mnt}/d/g' && rm -r '{mnt}/d' && ls '{mnt}/nothing-here' || true",
                   shell=True, check=True, timeout=TIMEOUT, capture_output=True)
    log = next(tmp_path.glob("mnt-*.log"))
    mount.unmount(mnt)
    text = log.read_text()
    assert "opcode: GETXATTR" in text and "unique:" in text  # the debug output is there
    lines = [line for line in text.splitlines() if "error" in line.lower()]
    assert lines == [], "\n".join(lines)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_foreground_mount_tells_systemd_when_ready(cli, remote, tmp_path, abstract):
    """A Type=notify service runs `sftpfs -f`: READY=1 goes to $NOTIFY_SOCKET once the mount is there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@sftpfs-notify-test-{os.getpid()}"
        sock.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify")
        sock.bind(name)
    sock.settimeout(TIMEOUT)
    proc = subprocess.Popen([sftpfs_binary(), f"root@127.0.0.1:{remote}", str(cli.mountpoint), "-f"] + cli.ssh_args(),
                            env=dict(cli.env, NOTIFY_SOCKET=name), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sock.recv(4096) == b"READY=1"
        assert is_mounted(cli.mountpoint)  # told only once mounted
    finally:
        subprocess.run(["fusermount3", "-u", str(cli.mountpoint)], capture_output=True)
        proc.wait(timeout=15)
        sock.close()
    assert proc.returncode == 0
