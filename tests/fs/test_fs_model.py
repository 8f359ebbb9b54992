"""The model-based random test (tests/fs/fsmodel.py) through real mounts: seeded random operations on
the mount and on a local directory, compared after every step, the server's files byte for byte at the
end. One mount per mode (default options, max_conns=2, caches off), each run for a bounded time:
SFTPFS_MODEL_SECONDS per mode (default 50), with a fixed seed per mode so the suite is reproducible
(SFTPFS_MODEL_SEED changes it). The full run is a command of its own (see fsmodel.py's docstring and
README). A failure prints the operations, shrunk, and the command that replays them.
"""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from fsmodel import MODES

SECONDS = float(os.environ.get("SFTPFS_MODEL_SECONDS", "50"))
SEEDS = {"default": 8101, "max_conns2": 8202, "nocache": 8303}
SHRINK_SECONDS = 60
# Outside the suite's temp dir (which test.sh removes): a failure's operation lists stay for replay.
KEEP = Path(os.environ.get("SFTPFS_MODEL_KEEP", "/tmp/sftpfs-model-failures"))


@pytest.mark.parametrize("mode", list(MODES))
def test_random_operations_agree_with_a_local_tree(mode, mount, remote, tmp_path):
    mnt = mount(remote, options=MODES[mode])
    model = tmp_path / "model"
    model.mkdir()
    seed = int(os.environ.get("SFTPFS_MODEL_SEED", SEEDS[mode]))
    command = ["/usr/bin/python3", str(ROOT / "tests" / "fs" / "fsmodel.py"), "--mode", mode, "--seed", str(seed),
               "--ops", "100000", "--seconds", str(SECONDS), "--shrink-seconds", str(SHRINK_SECONDS),
               "--keep", str(KEEP), "--mountpoint", str(mnt), "--server-dir", str(remote), "--model-dir", str(model)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS + SHRINK_SECONDS + 240)
    except subprocess.TimeoutExpired as e:
        progress = KEEP / f"model-{mode}-seed{seed}-progress.jsonl"
        pytest.fail(f"the model run hung (seed {seed}); the operations so far are in {progress}\n"
                    f"{e.stdout or ''}{e.stderr or ''}")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ops agreed" in result.stdout
