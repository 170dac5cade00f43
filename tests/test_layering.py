"""The layer rules of docs/architecture.md, checked mechanically."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("litestar", "sqlmodel", "sqlalchemy", "docker", "textual", "pynvml")


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"import-linter is not installed next to {sys.executable}"
    proc = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout, proc.stdout
    # Each contract of pyproject.toml was checked, the layers among them (none skipped or renamed
    # away from what this file and docs/architecture.md expect).
    for contract in contracts():
        assert f"{contract['name']} KEPT" in proc.stdout, (contract["name"], proc.stdout)


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_the_layers_are_the_documented_ones() -> None:
    """One layers contract covers every package of fetchml (exhaustive), and its levels are
    written in docs/architecture.md as they are in pyproject.toml."""
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    assert layers["containers"] == ["fetchml"] and layers["exhaustive"] is True
    doc_lines = {line.strip() for line in (REPO / "docs" / "architecture.md").read_text().splitlines()}
    missing = [level for level in layers["layers"] if level not in doc_lines]
    assert missing == [], f"levels of the layers contract not written in docs/architecture.md: {missing}"


def loaded_after(statement: str) -> list[str]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_the_cli_loads_no_heavy_framework() -> None:
    assert loaded_after("import fetchml.cli") == []


def test_importing_the_cli_entry_point_loads_no_heavy_framework() -> None:
    assert loaded_after("import fetchml.cli.main") == []


def test_the_probe_can_see_heavy_imports() -> None:
    """Guards the two tests above: the same probe does report a framework once loaded."""
    assert {"litestar", "sqlalchemy", "sqlmodel"} <= set(loaded_after("import fetchml.server.app"))
