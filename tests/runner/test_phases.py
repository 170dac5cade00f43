"""fetchml/runner/phases.py: the phases of an attempt follow each other without overlap, the log
gets one whole JSON line per attempt (mode 0600), and a log that cannot be written never stops
an attempt (one warning, then silence)."""

from __future__ import annotations

import json
import logging
import stat
import time
from pathlib import Path

import pytest

from fetchml.runner.phases import PHASES, PhaseClock, PhaseLog


def test_laps_follow_each_other_and_add_up(tmp_path: Path) -> None:
    answered = time.perf_counter()
    sent = answered - 0.004
    clock = PhaseClock(sent, answered)
    for name in PHASES[1:]:
        time.sleep(0.001)
        clock.lap(name)
    total = (time.perf_counter() - answered) * 1000
    assert clock.ms["claim"] == pytest.approx(4.0)
    assert all(clock.ms[name] >= 1.0 for name in PHASES[1:])
    # From the claim's answer on, the laps cover the time without gaps or overlap.
    assert sum(clock.ms[name] for name in PHASES[1:]) == pytest.approx(total, abs=0.5)

    path = tmp_path / "phases.jsonl"
    log = PhaseLog(path)
    log.write("t1", 1, "completed", clock)
    log.write("t2", 2, "failed", PhaseClock(sent, sent))
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert list(first) == ["task_id", "attempt", "status", *PHASES]
    assert (second["task_id"], second["attempt"], second["status"], list(second)[3:]) == ("t2", 2, "failed", ["claim"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_a_path_nothing_is_written_and_a_bad_path_only_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = PhaseClock(0.0, 0.0)
    PhaseLog(None).write("t", 1, "completed", clock)
    assert list(tmp_path.iterdir()) == []
    bad = PhaseLog(tmp_path / "no-such-folder" / "phases.jsonl")
    with caplog.at_level(logging.WARNING, logger="fetchml.runner"):
        for _ in range(3):
            bad.write("t", 1, "completed", clock)
    assert [r.getMessage() for r in caplog.records].count(
        f"cannot write the phase log {tmp_path / 'no-such-folder' / 'phases.jsonl'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'no-such-folder' / 'phases.jsonl'}'"
    ) == 1


def test_a_link_planted_at_the_path_is_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A task running as another user may write where the log lives (/tmp): a link it leaves at
    the log's path must not make the worker append to the file it points at."""
    target = tmp_path / "victim"
    target.write_text("kept\n")
    link = tmp_path / "phases.jsonl"
    link.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="fetchml.runner"):
        PhaseLog(link).write("t", 1, "completed", PhaseClock(0.0, 0.0))
    assert target.read_text() == "kept\n"
    assert any("cannot write the phase log" in r.getMessage() for r in caplog.records)
