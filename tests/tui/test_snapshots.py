"""SVG snapshots of the TUI's panes at a fixed size, from the sample state (fixed clock, UTC).

The SVGs are the screenshots in docs/tui.md (docs/img/tui/), exported by the app itself, so the
docs show what the app draws. After a deliberate change to the look, write them again with

    FETCHML_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/tui/test_snapshots.py -p no:cacheprovider

(pytest-textual-snapshot does the same job, but pins syrupy 4.8, which needs pytest < 9.)
"""

from __future__ import annotations

import asyncio
import difflib
import io
import os
import re
from datetime import UTC
from pathlib import Path

import pytest
from rich.console import Console

from fetchml.tui.app import FetchmlTui
from fetchml.tui.sample import NOW, demo_services, demo_state
from fetchml.tui.state import USER, Viewer

SNAPSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img" / "tui"
SIZE = (120, 34)
UPDATE = os.environ.get("FETCHML_UPDATE_SNAPSHOTS") == "1"

SCENES: dict[str, tuple[list[str], Viewer | None]] = {
    "queue": ([], None),
    "running": (["2"], None),
    "workers": (["3"], None),
    "reservations": (["4"], None),
    "ended": (["6", "enter"], None),
    "help": (["question_mark"], None),
    "filter": (["slash", *"user:alice", "enter", "2"], None),
    "user": (["3"], Viewer(USER, "alice")),
    "services": (["7"], None),
}


def screen_text(app: FetchmlTui) -> str:
    console = Console(
        width=SIZE[0], height=SIZE[1], file=io.StringIO(), force_terminal=True, color_system=None, record=True
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def render(keys: list[str], viewer: Viewer | None) -> tuple[str, str]:
    app = FetchmlTui(
        None, state=demo_state(viewer), clock=lambda: NOW, tz=UTC, services=demo_services(viewer)
    )
    out: dict[str, str] = {}

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            app.sub_title = "http://127.0.0.1:9101"
            await pilot.pause()
            for key in keys:
                await pilot.press(key)
            await pilot.pause()
            out["svg"] = app.export_screenshot(title="fetchml tui")
            out["text"] = screen_text(app)

    asyncio.run(main())
    return out["svg"], out["text"]


def _normal(svg: str) -> str:
    # Rich names the SVG's CSS classes after a hash of the content; the content is compared.
    return re.sub(r"terminal-\d+", "terminal", svg)


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_snapshot(scene: str, tmp_path: Path) -> None:
    keys, viewer = SCENES[scene]
    svg, text = render(keys, viewer)
    path = SNAPSHOTS / f"{scene}.svg"
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI"):
            pytest.fail(f"{path} is missing: write it with FETCHML_UPDATE_SNAPSHOTS=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(svg)
        path.with_suffix(".txt").write_text(text)
        return
    expected = path.read_text()
    if _normal(expected) != _normal(svg):
        (tmp_path / path.name).write_text(svg)
        old = path.with_suffix(".txt").read_text() if path.with_suffix(".txt").exists() else ""
        diff = "\n".join(
            difflib.unified_diff(old.splitlines(), text.splitlines(), "expected", "now", lineterm="")
        )
        pytest.fail(
            f"{scene} differs from {path} (new one in {tmp_path / path.name}):\n{diff or '(styles only)'}"
        )


def test_the_snapshots_are_the_docs_screenshots() -> None:
    doc = (SNAPSHOTS.parents[1] / "tui.md").read_text()
    for scene in ("queue", "running", "workers", "ended", "help", "services"):
        assert f"img/tui/{scene}.svg" in doc, scene
