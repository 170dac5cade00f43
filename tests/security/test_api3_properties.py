"""OWASP API3 (broken object property level authorization): which Task properties a reader gets.

- A reader who is not the task's owner (nor an admin) gets the scheduling view only: the
  content properties (args, entrypoint, snapshot_id, datasets, dataset_specs, metadata,
  plugin_configs, plugin_status, image, output, error) are absent from the JSON, not null.
- Credentials inside URLs (dataset sources such as https://user:pass@host/x?token=...) are
  redacted in every response, the owner's own included, and in the audit log; only the
  worker's assignment carries the source as submitted, since the worker downloads with it.
"""

from __future__ import annotations

import json

import pytest

from fetchml.core.models import TASK_CONTENT_FIELDS
from fetchml.core.redact import redact_text, redact_url
from tests.harness import Keys, ServerHandle
from tests.protocol_kit import FakeWorker

SHA = "ab" * 32
SECRET_SOURCE = "https://data-user:HUNTER2pw@data.example:8443/sets/x.tar?token=TOKVAL123&part=2#sig=FRAGSIG9"
SHOWN_SOURCE = "https://data.example:8443/sets/x.tar?token=REDACTED&part=2#sig=REDACTED"
SECRETS = ("HUNTER2pw", "data-user", "TOKVAL123", "FRAGSIG9")


def no_secret(value: object) -> None:
    text = json.dumps(value) if not isinstance(value, str) else value
    for secret in SECRETS:
        assert secret not in text, (secret, text)


def test_non_owners_get_no_content_properties_at_all(srv: ServerHandle, ks: Keys) -> None:
    body = {
        "job_name": "props",
        "args": "--a",
        "entrypoint": "train.py",
        "datasets": ["d"],
        "dataset_specs": [{"name": "d", "source": "/srv/d", "sha256": SHA}],
        "metadata": {"k": "v"},
        "image": "busybox",
        "plugin_configs": {"mlflow": {"enabled": True}},
        "gpu_type": "A100",
        "node_count": 1,
    }
    with srv.http(ks.user) as alice:
        created = alice.post("/v1/tasks", json=body).json()
    tid = created["id"]
    # Absent values are omitted: the content fields this task has values for.
    given = TASK_CONTENT_FIELDS & body.keys()
    assert created.keys() >= given
    with srv.http(ks.other) as bob:
        one = bob.get(f"/v1/tasks/{tid}").json()
        [listed] = [t for t in bob.get("/v1/tasks", params={"limit": 1000}).json()["tasks"] if t["id"] == tid]
        by_user = bob.get("/v1/tasks", params={"user_id": "alice", "limit": 1000}).json()["tasks"][0]
    for seen in (one, listed, by_user):
        assert not (TASK_CONTENT_FIELDS & seen.keys()), sorted(TASK_CONTENT_FIELDS & seen.keys())
        # The scheduling view stays, with real values.
        for field in ("id", "job_name", "user_id", "status", "priority", "priority_aged", "created_at"):
            assert field in seen, field
    assert (one["gpu_type"], one["node_count"], one["max_retries"], one["retry_count"]) == ("A100", 1, 3, 0)
    with srv.http(ks.admin) as admin:
        assert admin.get(f"/v1/tasks/{tid}").json().keys() >= given


def test_credentials_in_dataset_sources_are_redacted_even_for_the_owner(
    srv: ServerHandle, ks: Keys, worker: FakeWorker
) -> None:
    body = {
        "job_name": "creds",
        "priority": 10,
        "datasets": [SECRET_SOURCE],
        "dataset_specs": [{"name": "d", "source": SECRET_SOURCE, "sha256": SHA}],
    }
    with srv.http(ks.user) as alice:
        created = alice.post("/v1/tasks", json=body).json()
        tid = created["id"]
        got = alice.get(f"/v1/tasks/{tid}").json()
        listed = [t for t in alice.get("/v1/tasks", params={"limit": 1000}).json()["tasks"] if t["id"] == tid]
    for seen in (created, got, *listed):
        assert seen["dataset_specs"][0]["source"] == SHOWN_SOURCE
        assert seen["datasets"] == [SHOWN_SOURCE]
        no_secret(seen)
    # The worker that runs it downloads with the real source.
    a = worker.must_claim()
    assert a.task.id == tid
    assert a.task.dataset_specs[0].source == SECRET_SOURCE
    # A failure message naming the URL (as a download error would) is redacted too, and so is
    # everything the audit log recorded about the task.
    failed = worker.report(a, "failed", exit_code=1, error=f"download of {SECRET_SOURCE} failed: 401")
    assert failed.dataset_specs[0].source == SHOWN_SOURCE  # the report's answer is a response too
    no_secret(failed.model_dump(mode="json"))
    with srv.http(ks.user) as alice:
        shown = alice.get(f"/v1/tasks/{tid}").json()
    assert shown["error"] == f"download of {SHOWN_SOURCE} failed: 401"
    with srv.http(ks.admin) as admin:
        events = admin.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
    mine = [e for e in events if e["resource"] == f"task:{tid}"]
    assert {e["event_type"] for e in mine} >= {"job_queued", "job_completed"}
    no_secret(mine)
    # The stored task keeps the source as submitted (the worker needs it on a retry).
    [(stored,)] = srv.db_exec("SELECT dataset_specs FROM tasks WHERE id = ?", (tid,))
    assert SECRET_SOURCE in str(stored)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("https://u:p@h/x", "https://h/x"),
        ("https://only-token@h/x", "https://h/x"),
        ("http://h/x?X-Amz-Signature=abc&X-Amz-Credential=c&x-id=GetObject", None),
        ("https://h/x?sig=s&se=2030&sp=r", "https://h/x?sig=REDACTED&se=2030&sp=r"),
        ("https://h/x?api_key=k&page=2", "https://h/x?api_key=REDACTED&page=2"),
        ("https://h/x?bare-secret-value", "https://h/x?REDACTED"),
        ("https://[::1]:8080/x?password=p", "https://[::1]:8080/x?password=REDACTED"),
        ("https://h:notaport/x", "https://REDACTED"),
        ("/srv/data/x.tar", "/srv/data/x.tar"),
        ("file:///srv/data/x.tar", "file:///srv/data/x.tar"),
        ("mnist", "mnist"),
    ],
)
def test_redact_url(raw: str, shown: str | None) -> None:
    out = redact_url(raw)
    if shown is not None:
        assert out == shown
    else:
        assert "abc" not in out and "X-Amz-Credential=REDACTED" in out and "x-id=GetObject" in out


def test_redact_text_finds_urls_inside_messages() -> None:
    msg = 'GET "https://a:b@h/x?token=t" failed; retry http://h2/y?code=c ok'
    assert redact_text(msg) == 'GET "https://h/x?token=REDACTED" failed; retry http://h2/y?code=REDACTED ok'
