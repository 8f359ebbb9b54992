"""A private sshd whose sftp subsystem is bench/sftp-logger (OpenSSH's sftp-server logging every
request), for tests that count the requests a mount sent for a path."""
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, private_sshd


class LoggedServer:
    """A private sshd running bench/sftp-logger; lines() reads what every session logged."""

    def __init__(self, server, log_dir: Path):
        self.server = server
        self.log_dir = log_dir

    def lines(self):
        out = []
        for log in sorted(self.log_dir.glob("sftp-*.log")):
            out += log.read_text(errors="replace").splitlines()
        return out

    def count(self, kind: str, path) -> int:
        """Requests of `kind` (lstat, opendir, remove, rename, ...) naming `path` exactly."""
        pattern = re.compile(r'\b' + re.escape(kind) + r' (?:name )?"' + re.escape(str(path)) + r'"')
        return sum(1 for line in self.lines() if pattern.search(line))


@contextlib.contextmanager
def logged_sshd(prefix: str):
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        logger_dir = work / "logger"
        logger_dir.mkdir()
        # bench/sftp-logger, flushed at every line: the tests read the log while the session runs.
        script = (ROOT / "bench" / "sftp-logger").read_text().replace("buffering=1 << 16", "buffering=1")
        assert "buffering=1)" in script
        (logger_dir / "sftp-logger").write_text(script)
        (logger_dir / "sftp-logger").chmod(0o755)
        log_dir = work / "logs"
        log_dir.mkdir()
        (logger_dir / "log-dir").write_text(str(log_dir))
        saved = os.environ.get("TEST_SSHD_SFTP_SERVER")
        os.environ["TEST_SSHD_SFTP_SERVER"] = str(logger_dir / "sftp-logger")
        try:
            with private_sshd(prefix + "sshd-") as server:
                os.environ.pop("TEST_SSHD_SFTP_SERVER", None)
                if saved is not None:
                    os.environ["TEST_SSHD_SFTP_SERVER"] = saved
                yield LoggedServer(server, log_dir)
        finally:
            os.environ.pop("TEST_SSHD_SFTP_SERVER", None)
            if saved is not None:
                os.environ["TEST_SSHD_SFTP_SERVER"] = saved
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def data(logged, request) -> Path:
    """An empty directory on the server named for the test (needs a `logged` fixture in the module)."""
    path = logged.server.remote_base / request.node.name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
