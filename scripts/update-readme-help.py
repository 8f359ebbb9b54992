#!/usr/bin/env python3
"""Replaces the `sftpfs --help` block in README.md with what the binary prints.

usage: scripts/update-readme-help.py [SFTPFS_BINARY]   (default build/release/sftpfs)
tests/fs/test_readme.py fails when the two differ, so the README never lists options the program lacks.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "This is `sftpfs --help`:\n\n```\n"


def help_text(binary: str) -> str:
    return subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout.rstrip()


def readme_help_block(readme: str) -> tuple[int, int]:
    start = readme.index(MARKER) + len(MARKER)
    end = readme.index("\n```", start)
    return start, end


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "build" / "release" / "sftpfs")
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    start, end = readme_help_block(readme)
    readme_path.write_text(readme[:start] + help_text(binary) + readme[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
