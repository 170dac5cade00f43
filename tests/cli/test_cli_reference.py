"""docs/cli.md's command reference is generated from the app: it names every command and
option, and a change to the CLI that is not regenerated into the docs fails here."""

from __future__ import annotations

import subprocess
import sys

from fetchml.cli import docgen
from fetchml.cli.main import COMMANDS
from tests.harness import REPO, base_env


def test_the_reference_in_docs_cli_md_is_current() -> None:
    text = docgen.DOC.read_text()
    assert docgen.BEGIN in text and docgen.END in text
    assert docgen.render(text) == text, "docs/cli.md is stale: run python -m fetchml.cli.docgen --write"


def test_every_command_and_option_is_in_it() -> None:
    block = docgen.reference()
    for name in COMMANDS:
        assert f"`fetchml {name}" in block, name
    for needle in ("`fetchml plugins set`", "`-t, --time DURATION`", "`--no-sidecars`", "FETCHML_API_KEY"):
        assert needle in block, needle


def test_check_mode_fails_on_a_stale_file() -> None:
    stale = docgen.render(docgen.DOC.read_text()).replace("`--no-sidecars`", "`--no-sidecar`")
    assert docgen.render(stale) != stale
    done = subprocess.run(
        [sys.executable, "-m", "fetchml.cli.docgen", "--check"], cwd=REPO, env=base_env(), capture_output=True
    )
    assert done.returncode == 0, done.stderr
