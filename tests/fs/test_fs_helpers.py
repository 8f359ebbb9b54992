"""Shared helpers for the filesystem tests (no tests here). Everything that touches the mount runs in a
child process with a timeout, so a hung filesystem fails the test instead of hanging the suite."""
import hashlib
import os
import subprocess

TIMEOUT = 180


def sh(command, cwd=None, timeout=TIMEOUT, check=True, input=None):
    """Runs a bash command line; returns the CompletedProcess (text)."""
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"command failed ({result.returncode}): {command}\n{result.stdout}\n{result.stderr}")
    return result


def pyrun(code, cwd=None, timeout=TIMEOUT):
    """Runs Python code in a child process (syscall-level checks on the mount); returns its stdout."""
    result = subprocess.run(["/usr/bin/python3", "-c", code], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"python child failed:\n{code}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def sha256_local(path):
    """SHA-256 of a file outside the mount (server side or local temp)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_mounted(path):
    return sh(f"sha256sum '{path}'").stdout.split()[0]


def make_file(path, size, seed=0):
    """A file of `size` pseudo-random bytes (deterministic per seed)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB pattern
    with open(path, "wb") as f:
        remaining = size
        counter = 0
        while remaining > 0:
            chunk = hashlib.sha256(counter.to_bytes(8, "little") + block[:32]).digest() + block
            chunk = chunk[:min(remaining, len(chunk))]
            f.write(chunk)
            remaining -= len(chunk)
            counter += 1


def stat_server(path):
    return os.lstat(path)
