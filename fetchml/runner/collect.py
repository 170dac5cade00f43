"""Collecting an attempt's outputs: what there is to upload, and the upload.

The worker looks at the output folder before it reports `collecting`, and reports that phase
only when there is a file to upload. An attempt that wrote none reports its end straight from
`running`; the server passes the task through `collecting` in the same transaction
(docs/worker-protocol.md), which spares a request and a write per task.

Every file is read through a descriptor opened without following links (a task, root in its
container, controls that folder): see `fetchml.runner.workspace`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fetchml.client.api import FetchmlClient
from fetchml.core.errors import FetchmlError
from fetchml.runner.workspace import OutputError, open_output, scan_outputs

log = logging.getLogger("fetchml.runner")

MAX_OUTPUT_CHARS = 65536  # StatusReport.output


@dataclass(frozen=True)
class Outputs:
    files: list[str] = field(default_factory=list)  # regular files, relative posix paths
    skipped: list[str] = field(default_factory=list)  # links, fifos, devices: never uploaded
    error: str | None = None  # the folder cannot be collected safely: the attempt fails with it


NO_OUTPUTS = Outputs()


def find_outputs(output_dir: Path, label: str) -> Outputs:
    try:
        found, skipped = scan_outputs(output_dir)
    except OutputError as exc:
        log.warning("%s: %s", label, exc)
        return Outputs(error=str(exc))
    return Outputs(files=[rel for rel, _size in found], skipped=skipped)


def upload_outputs(
    client: FetchmlClient, task_id: str, attempt: int, output_dir: Path, outputs: Outputs, label: str
) -> tuple[str | None, list[str]]:
    """Upload `outputs.files`: (why the attempt fails or None, the entries left out)."""
    if outputs.error is not None:
        return outputs.error, []
    skipped = list(outputs.skipped)
    for rel in outputs.files:
        try:
            with open_output(output_dir, rel) as fh:
                client.artifacts.upload(task_id, attempt, rel, fh)
        except OutputError as exc:
            skipped.append(rel)
            log.warning("%s: output not collected: %s", label, exc)
        except FetchmlError as exc:
            return f"artifact {rel} could not be uploaded: {exc.message}", skipped
    if skipped:
        log.warning("%s: not collected: %s", label, ", ".join(skipped[:20]))
    return None, skipped


def with_skipped_note(output: str, skipped: list[str]) -> str:
    """The attempt's last lines, plus a line naming what was left out of its artifacts."""
    if not skipped:
        return output
    shown = ", ".join(skipped[:20]) + (f" and {len(skipped) - 20} more" if len(skipped) > 20 else "")
    note = f"[fetchml] not collected (links, fifos or devices): {shown}"
    return f"{output}\n{note}"[-MAX_OUTPUT_CHARS:] if output else note
