"""SFTP servers other than OpenSSH's, each started on a free 127.0.0.1 port in a temp dir of its own and
stopped by pid: what users run (all from Debian's packages, see docs/servers.md).

    start_server(name, directory) -> Server     (a context manager: private_server(name))

Every Server looks like conftest's Sshd (port, key, known_hosts, remote_base, ssh_options(), stop()),
plus:
- `server_path(local_path)`: the path to give sftpfs for a local directory (chrooted servers see a
  different path than the local one);
- `features`: what the server really does (the tests select by it), e.g. "symlink", "hardlink",
  "chmod", "statvfs", "lsetstat", "truncate", "append".

The names: openssh (sshd + sftp-server, the default of every test), internal-sftp, gesftpserver,
proftpd, rclone, asyncssh, paramiko, dropbear (running OpenSSH's sftp-server).
"""
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"
TEST_SSHD = SUPPORT / "test-sshd"

ALL = ["openssh", "internal-sftp", "gesftpserver", "proftpd", "rclone", "asyncssh", "paramiko", "dropbear"]

# What each server really does (not what it advertises). Everything OpenSSH does:
FULL = {"symlink", "hardlink", "chmod", "chown", "statvfs", "lsetstat", "truncate", "append", "fsync",
        "posix-rename", "utimes", "readlink-relative", "mkdir-mode"}
FEATURES = {
    "openssh": FULL,
    "internal-sftp": FULL,
    "dropbear": FULL,
    "gesftpserver": FULL - {"lsetstat"},
    # chrooted: absolute link targets come back in the chroot's terms; READLINK answers absolute paths
    "proftpd": FULL - {"lsetstat", "readlink-relative"},
    # no symlinks, hard links or chmod; truncate and positioned writes after reopening are lost
    "rclone": {"posix-rename"},
    "asyncssh": FULL - {"lsetstat"},
    # no posix-rename: a rename onto an existing directory fails
    "paramiko": FULL - {"lsetstat", "hardlink", "statvfs", "fsync", "truncate", "posix-rename"},
}


def _free_port() -> int:
    for _ in range(50):
        port = 20000 + random.randrange(40000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def _port_open(port) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _keygen(path, kind="ed25519", pem=False):
    if not Path(path).exists():
        args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test", "-f", str(path)]
        if pem:
            args += ["-m", "PEM"]
        subprocess.run(args, check=True)


def _alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _descendants(pid):
    out = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _descendants(int(child))
        out.append(int(child))
    return out


class Server:
    name = "?"
    user_key_type = "ed25519"

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.remote_base = self.dir / "remote"
        self.remote_base.mkdir(exist_ok=True)
        self.key = str(self.dir / f"id_{self.user_key_type}")
        _keygen(self.key, self.user_key_type)
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(self.key + ".pub").read_text())
        os.chmod(self.authorized_keys, 0o600)
        self.known_hosts = str(self.dir / "known_hosts")
        self.features = FEATURES[self.name]
        self.proc = None
        self.pid = None
        self.port = None

    def server_path(self, local_path) -> str:
        return str(local_path)

    def ssh_options(self):
        return ["-p", str(self.port), "-o", f"IdentityFile={self.key}", "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def _write_known_hosts(self, *public_key_lines):
        with open(self.known_hosts, "w") as f:
            for line in public_key_lines:
                kind, blob = line.split()[:2]
                f.write(f"[127.0.0.1]:{self.port} {kind} {blob}\n")

    def _spawn(self, args, port, env=None, **kw):
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, **kw)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if port is None:
                port_file = self.dir / "port"
                if port_file.exists():
                    port = int(port_file.read_text())
            if port is not None and _port_open(port):
                self.port = port
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n" + (self.dir / "server.log").read_text(errors="replace")[-3000:])

    def stop(self):
        if self.proc is None:
            return
        pids = _descendants(self.proc.pid) + [self.proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None


class OpenSsh(Server):
    """sshd from the tests' own script, with another sftp subsystem."""
    subsystem = "/usr/lib/openssh/sftp-server"

    def start(self):
        env = dict(os.environ, TEST_SSHD_SFTP_SERVER=self.subsystem)
        self.port = int(subprocess.check_output([str(TEST_SSHD), "start", str(self.dir)], text=True, env=env).strip())
        self.pid = int((self.dir / "sshd.pid").read_text())
        self.key = str(self.dir / "id_ed25519")
        self.known_hosts = str(self.dir / "known_hosts")

    def stop(self):
        subprocess.run([str(TEST_SSHD), "stop", str(self.dir)], check=False)


class OpenSshSftpServer(OpenSsh):
    name = "openssh"


class InternalSftp(OpenSsh):
    name = "internal-sftp"
    subsystem = "internal-sftp"


class Gesftpserver(OpenSsh):
    name = "gesftpserver"
    subsystem = "/usr/libexec/gesftpserver"


class Dropbear(Server):
    """dropbear runs /usr/lib/sftp-server (OpenSSH's). It reads only ~root/.ssh/authorized_keys, so it runs
    in a private mount namespace where /root/.ssh is this server's directory."""
    name = "dropbear"

    def start(self):
        ssh_dir = self.dir / "dot-ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.authorized_keys, ssh_dir / "authorized_keys")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        host_key = self.dir / "dropbear_ed25519"
        if not host_key.exists():
            subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], check=True, capture_output=True)
        public = subprocess.run(["dropbearkey", "-y", "-f", str(host_key)], check=True, capture_output=True,
                                text=True).stdout
        public_line = next(line for line in public.splitlines() if line.startswith("ssh-ed25519 "))
        port = _free_port()
        script = (f"mount --make-rprivate / && mkdir -p /root/.ssh && mount --bind '{ssh_dir}' /root/.ssh && "
                  f"exec dropbear -F -E -s -m -p 127.0.0.1:{port} -r '{host_key}' -P '{self.dir}/dropbear.pid'")
        self._spawn(["unshare", "-m", "sh", "-c", script], port)
        self._write_known_hosts(public_line)


class Proftpd(Server):
    """proftpd with mod_sftp, chrooted (DefaultRoot) to the served directory, as hosting accounts run it."""
    name = "proftpd"

    def server_path(self, local_path) -> str:
        rel = os.path.relpath(str(local_path), str(self.remote_base))
        return "/" if rel == "." else "/" + rel

    def start(self):
        host_key = self.dir / "host_ecdsa"
        _keygen(host_key, "ecdsa", pem=True)
        port = _free_port()
        # Its own user file (root, home = the served directory), so neither the system's accounts nor PAM
        # (whose ftpusers list refuses root) play a part.
        users = self.dir / "proftpd.passwd"
        users.write_text(f"root:x:0:0::{self.remote_base}:/bin/sh\n")
        os.chmod(users, 0o600)
        # mod_sftp's key files are in RFC 4716 format (an OpenSSH line passes the first check, then fails).
        rfc4716 = self.dir / "authorized_keys.rfc4716"
        rfc4716.write_text(subprocess.run(["ssh-keygen", "-e", "-f", self.key + ".pub"], check=True,
                                          capture_output=True, text=True).stdout)
        conf = self.dir / "proftpd.conf"
        conf.write_text(f"""
ServerName "sftpfs test"
ServerType standalone
DefaultServer on
Port {port}
DefaultAddress 127.0.0.1
SocketBindTight on
UseIPv6 off
User root
Group root
PidFile {self.dir}/proftpd.pid
ScoreboardFile {self.dir}/proftpd.scoreboard
DelayTable none
WtmpLog off
TransferLog none
SystemLog {self.dir}/proftpd.syslog
UseReverseDNS off
RequireValidShell off
RootLogin on
AuthOrder mod_auth_file.c
AuthUserFile {users}
UseFtpUsers off
<IfModule mod_auth_pam.c>
  AuthPAM off
</IfModule>
Umask 022
AllowOverwrite on
DefaultRoot {self.remote_base}
<IfModule !mod_sftp.c>
  LoadModule mod_sftp.c
</IfModule>
SFTPEngine on
SFTPLog {self.dir}/sftp.log
SFTPHostKey {host_key}
SFTPAuthMethods publickey
SFTPAuthorizedUserKeys file:{rfc4716}
<Limit ALL SITE_CHMOD>
  AllowAll
</Limit>
""")
        self._spawn(["proftpd", "-n", "-q", "-c", str(conf)], port)
        self._write_known_hosts(Path(str(host_key) + ".pub").read_text())


class Rclone(Server):
    """rclone serve sftp of a local directory (served as /). --dir-cache-time 0s instead of 5 minutes, so
    files a test puts in place on the server side show up (users see minutes of staleness)."""
    name = "rclone"

    def server_path(self, local_path) -> str:
        rel = os.path.relpath(str(local_path), str(self.remote_base))
        return "/" if rel == "." else "/" + rel

    def start(self):
        host_key = self.dir / "host_ed25519"
        _keygen(host_key)
        port = _free_port()
        (self.dir / "rclone.conf").write_text("")
        env = dict(os.environ, RCLONE_CONFIG=str(self.dir / "rclone.conf"), HOME=str(self.dir))
        self._spawn(["rclone", "serve", "sftp", str(self.remote_base), "--addr", f"127.0.0.1:{port}",
                     "--key", str(host_key), "--authorized-keys", str(self.authorized_keys),
                     "--dir-cache-time", "0s"], port, env=env)
        self._write_known_hosts(Path(str(host_key) + ".pub").read_text())


class AsyncSsh(Server):
    name = "asyncssh"

    def start(self):
        host_key = self.dir / "host_ed25519"
        _keygen(host_key)
        self._spawn(["/usr/bin/python3", str(SUPPORT / "asyncssh-sftp-server"), str(self.dir)], None, cwd=self.dir)
        self._write_known_hosts(Path(str(host_key) + ".pub").read_text())


class Paramiko(Server):
    name = "paramiko"

    def start(self):
        host_key = self.dir / "host_rsa"
        _keygen(host_key, "rsa", pem=True)
        self._spawn(["/usr/bin/python3", str(SUPPORT / "paramiko-sftp-server"), str(self.dir)], None, cwd=self.dir)
        self._write_known_hosts(Path(str(host_key) + ".pub").read_text())


CLASSES = {cls.name: cls for cls in (OpenSshSftpServer, InternalSftp, Gesftpserver, Dropbear, Proftpd, Rclone,
                                     AsyncSsh, Paramiko)}


def start_server(name, directory) -> Server:
    server = CLASSES[name](Path(directory))
    server.start()
    return server


@contextlib.contextmanager
def private_server(name, prefix=None):
    """A server of this kind in a new temp dir; stopped (by pid) and removed whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix=prefix or f"sftpfs-{name}-"))
    try:
        server = start_server(name, directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    # Manual use: servers.py NAME DIR starts one in the foreground and prints how to mount it.
    import sys
    srv = start_server(sys.argv[1], Path(sys.argv[2]))
    print(f"{srv.name} on port {srv.port}: sftpfs root@127.0.0.1:{srv.server_path(srv.remote_base)} MNT "
          + " ".join(srv.ssh_options()))
    try:
        signal.pause()
    finally:
        srv.stop()
