#!/usr/bin/env python3
"""Writes the manual pages sftpfs.1 and mount.sftpfs.8 from packaging/man/*.in and `sftpfs --help`.

usage: packaging/gen-man.py SFTPFS_BINARY OUTDIR

The option lists in both pages are `sftpfs --help` turned into roff, and --help is printed from sftpfs's
one option table (src/cli/options.cpp), so a page lists exactly the options the binary beside it
accepts: an option added to the table appears in the pages at the next build. The prose around the
lists is in the templates. tests/fs/test_man_pages.py checks that every option in --help is in the pages.

Placeholders in the templates:
  @VERSION@        `sftpfs --version`'s version
  @DATE@           SOURCE_DATE_EPOCH (set by dpkg-buildpackage from debian/changelog), else today
  @SYNOPSIS@       --help's usage lines
  @OPTIONS@        every option section of --help
  @MOUNT_OPTIONS@  the sections of -o options only (what an fstab line or mount -o may hold)
"""
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = {"sftpfs.1": HERE / "man" / "sftpfs.1.in", "mount.sftpfs.8": HERE / "man" / "mount.sftpfs.8.in"}


def roff_text(text: str) -> str:
    """Plain text for a roff line: backslashes and hyphen-minus in option-like words escaped."""
    text = text.replace("\\", "\\e")
    # A leading '-' of a word is a minus sign (an option), as in "-o" or "--help".
    text = re.sub(r"(^|(?<=[\s(\[,]))-", r"\\-", text)
    text = re.sub(r"(?<=\\-)-", r"\\-", text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def roff_option(option: str) -> str:
    """An option's left column: the option bold, its placeholders (upper-case words after a space, '=',
    ',' or '[') italic."""
    out, last = [], 0
    for match in re.finditer(r"(?<=[ =,\[])[A-Z][A-Z0-9_]*", option):
        out.append(("B", option[last:match.start()]))
        out.append(("I", match.group(0)))
        last = match.end()
    out.append(("B", option[last:]))
    return "".join(f"\\f{font}{roff_text(part)}" for font, part in out if part) + "\\fR"


class Help:
    """`sftpfs --help`, parsed: usage lines, the description, and the sections of options."""

    def __init__(self, text: str):
        self.usage, self.description, self.sections = [], [], []  # sections: (title, [entry or paragraph])
        lines = text.rstrip("\n").split("\n")
        i = 0
        while i < len(lines) and lines[i].strip():
            self.usage.append(re.sub(r"^(usage:)?\s*", "", lines[i]))
            i += 1
        for line in lines[i:]:
            if not line.strip():
                continue
            option = re.match(r"^ {4}(-\S.*?)(?: {2,}(\S.*))?$", line)
            if re.match(r"^\S.*:$", line):
                self.sections.append((line[:-1], []))
            elif option and self.sections:
                self.sections[-1][1].append({"option": option.group(1), "help": [option.group(2) or ""]})
            elif line.startswith("     ") and self.sections and self.sections[-1][1] and \
                    isinstance(self.sections[-1][1][-1], dict):
                self.sections[-1][1][-1]["help"].append(line.strip())
            elif not self.sections:
                self.description.append(line.strip())
            else:  # a paragraph after a section's list
                self.sections.append(("", [line.strip()]))

    def options(self):
        """Every option's left column, as --help shows it."""
        return [entry["option"] for _, entries in self.sections for entry in entries if isinstance(entry, dict)]

    def roff(self, mount_only: bool) -> str:
        out = []
        for title, entries in self.sections:
            options = [e for e in entries if isinstance(e, dict)]
            # The mount page lists what -o takes; untitled paragraphs (notes after a list) go in both.
            if mount_only and title and not (options and all(e["option"].startswith("-o ") for e in options)):
                continue
            if title:
                out.append(f'.SS "{roff_text(title)}"')
            for entry in entries:
                if isinstance(entry, str):
                    out.append(".PP")
                    out.append(roff_text(entry))
                    continue
                out.append(".TP")
                out.append(roff_option(entry["option"]))
                out.append(roff_text(" ".join(part for part in entry["help"] if part)))
        return "\n".join(out)


def run(binary: str, *args: str) -> str:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "LC_ALL": "C"}).stdout


def page_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(
        datetime.timezone.utc)
    return when.strftime("%Y-%m-%d")


def generate(binary: str, outdir: Path) -> list[Path]:
    help_ = Help(run(binary, "--help"))
    version = run(binary, "--version").split()
    values = {
        "@VERSION@": next((w for w in version if re.match(r"^\d+\.\d+", w)), "unknown"),
        "@DATE@": page_date(),
        "@SYNOPSIS@": "\n.br\n".join(roff_text(line) for line in help_.usage),
        "@OPTIONS@": help_.roff(mount_only=False),
        "@MOUNT_OPTIONS@": help_.roff(mount_only=True),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, template in PAGES.items():
        text = template.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        leftover = re.findall(r"@[A-Z_]+@", text)
        if leftover:
            raise SystemExit(f"gen-man: {template}: unknown placeholders {leftover}")
        (outdir / name).write_text(text)
        written.append(outdir / name)
    return written


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    for path in generate(sys.argv[1], Path(sys.argv[2])):
        print(f"gen-man: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
