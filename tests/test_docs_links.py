"""The README and docs/ link only to files inside the repository, and every such link resolves:
a user who clones the repository has everything they point at."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]*)(#[^)\s]*)?\)")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_relative_link_resolves_inside_the_repository() -> None:
    problems = []
    checked = 0
    for doc in DOCS:
        for m in LINK.finditer(doc.read_text(encoding="utf-8")):
            target = m.group(1)
            if not target or target.startswith(("http://", "https://", "mailto:")):
                continue
            checked += 1
            path = (doc.parent / target).resolve()
            if not path.is_relative_to(REPO):
                problems.append(f"{doc.name}: {target} is outside the repository")
            elif not path.exists():
                problems.append(f"{doc.name}: {target} does not exist")
    assert checked > 20, checked  # the pattern still finds the links
    assert problems == []


def test_no_doc_points_at_a_sibling_checkout() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text, doc.name


# A path in backticks: `services/tasks.py`, `core/scheduling/`, `tests/services/`.
ARCH_PATH = re.compile(r"`((?:[a-z_]+/)+(?:[a-z_0-9]+\.py)?)`")


def test_every_module_path_in_the_architecture_page_exists() -> None:
    """docs/architecture.md maps names to files: every path it names is there. Module paths are
    relative to fetchml/; tests/, docs/ and bench/ paths to the repository's root."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(ARCH_PATH.findall(text))
    assert len(named) > 100, len(named)  # the pattern still finds them
    missing = []
    for rel in sorted(named):
        base = REPO if rel.split("/")[0] in ("tests", "docs", "bench", "fetchml") else REPO / "fetchml"
        if not (base / rel).exists():
            missing.append(rel)
    assert missing == []
