"""README.md lists every option exactly as `sftpfs --help` prints it (scripts/update-readme-help.py
refreshes it), and names the two quick-start commands that .ci/run relies on."""
import importlib.util

from conftest import ROOT, sftpfs_binary


def load_updater():
    spec = importlib.util.spec_from_file_location("update_readme_help", ROOT / "scripts" / "update-readme-help.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_option_list_matches_help():
    updater = load_updater()
    readme = (ROOT / "README.md").read_text()
    start, end = updater.readme_help_block(readme)
    assert readme[start:end] == updater.help_text(sftpfs_binary()), \
        "README.md's option list differs from sftpfs --help: run scripts/update-readme-help.py"


def test_quick_start_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/demo.sh" in readme
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in ci
