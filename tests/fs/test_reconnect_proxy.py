"""A mount through a ProxyCommand reconnects as a direct one does: when the proxy process dies (the
jump host's link dropped), a new proxy is started, open files are reopened and the writes in flight
are sent again."""
import hashlib
import os
import signal
import time

from conftest import wait_until


def proxy_children(daemon_pid: int):
    """Pids of the daemon's `ssh -W` proxy children."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == daemon_pid and b"-W" in argv:
            pids.append(int(entry))
    return pids


def test_proxycommand_mount_survives_its_proxy_dying(sshd, remote, mount):
    proxy = (f"ssh -q -W %h:%p -p {sshd.port} -i {sshd.key} -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o UserKnownHostsFile={sshd.known_hosts} -o GlobalKnownHostsFile=/dev/null "
             f"-o HostKeyAlias=[127.0.0.1]:{sshd.port} root@127.0.0.1")
    # Read after the reconnect, through the new proxy. Made before the mount: a name created on the
    # server after the mount listed the directory may stay hidden for negative_timeout.
    (remote / "later").write_text("seen\n")
    mnt = mount(remote, options=[f"ProxyCommand={proxy}", f"HostKeyAlias=[127.0.0.1]:{sshd.port}"])
    daemon = [p for m, p in mount.mounts if m == mnt][0].pid
    first = proxy_children(daemon)
    assert len(first) == 1, first

    digest = hashlib.sha256()
    with open(mnt / "out", "wb", buffering=0) as f:
        for i in range(32):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
            if i == 12:
                os.kill(first[0], signal.SIGKILL)  # the proxy dies with writes in flight
    assert hashlib.sha256((remote / "out").read_bytes()).hexdigest() == digest.hexdigest()
    assert wait_until(lambda: proxy_children(daemon) and proxy_children(daemon) != first, timeout=10)
    assert (mnt / "later").read_text() == "seen\n"
