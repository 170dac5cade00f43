"""`fetchml audit export` from a real server, then `fetchml audit verify --file` with no server:
it passes on the export and fails, naming the first bad event or checkpoint, on each of five
tamperings: an edit, a deletion, a reorder, a truncated tail, and the whole chain rewritten and
re-signed with a fresh key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fetchml.core.audit import event_hash, key_id_of, public_key_pem, sign_checkpoint
from fetchml.host.auditfile import checkpoint_line, event_line
from tests.cli.conftest import Result, assert_ok, cli_env, run, unreachable_url
from tests.harness import Keys, ServerHandle, make_keys

N_TASKS = 14


class Export:
    def __init__(self, path: Path, pub: Path, lines: list[dict[str, Any]]) -> None:
        self.path, self.pub, self.lines = path, pub, lines

    def events(self) -> list[dict[str, Any]]:
        return [d for d in self.lines if d["kind"] == "event"]

    def checkpoints(self) -> list[dict[str, Any]]:
        return [d for d in self.lines if d["kind"] == "checkpoint"]


@pytest.fixture(scope="module")
def exported(
    module_server_factory: Callable[..., ServerHandle], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServerHandle, Keys, Export]:
    srv = module_server_factory(FETCHML_AUDIT_CHECKPOINT_EVENTS="5", FETCHML_AUDIT_CHECKPOINT_SECONDS="3600")
    k = make_keys(srv)
    with srv.http(k.user) as http:
        for i in range(N_TASKS):
            assert (
                http.post("/v1/tasks", json={"job_name": f"exp{i}", "priority": 1 + i % 9}).status_code == 201
            )
    deadline = time.monotonic() + 20
    with srv.http(k.admin) as http:
        # Enough checkpoints that several lie inside the file, not only at its end.
        while http.get("/v1/audit/checkpoints").json()["total"] < 3:
            assert time.monotonic() < deadline, "the server wrote too few checkpoints"
            assert http.post("/v1/tasks", json={"job_name": "more"}).status_code == 201
            time.sleep(0.3)
    out = tmp_path_factory.mktemp("export")
    path, pub = out / "audit.jsonl", out / "audit.pub"
    env = cli_env(srv, k.admin)
    result = assert_ok(run(["audit", "export", "--out", str(path)], env))
    assert "events and" in result.stderr and not (out / "audit.jsonl.partial").exists()
    key = assert_ok(run(["audit", "public-key"], env))
    pub.write_text(key.stdout)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return srv, k, Export(path, pub, lines)


def offline(file: Path, *keys: Path, json_out: bool = False) -> Result:
    # No server anywhere: the URL points at nothing, and no key is set.
    env = cli_env(None, None, FETCHML_SERVER_URL=unreachable_url())
    args = ["audit", "verify", "--file", str(file)] + [a for k in keys for a in ("--public-key", str(k))]
    return run(args + (["--json"] if json_out else []), env)


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    with open(path, "wb") as f:
        for d in lines:
            if d["kind"] == "event":
                f.write(event_line({k: v for k, v in d.items() if k != "kind"}))
            elif d["kind"] == "checkpoint":
                f.write(checkpoint_line(d))
            else:
                f.write(json.dumps(d).encode() + b"\n")
    return path


def assert_names(result: Result, needle: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "INVALID" in result.stdout and needle in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_export_is_ordered_and_verifies_offline(exported: tuple[ServerHandle, Keys, Export]) -> None:
    srv, k, ex = exported
    assert ex.lines[0]["kind"] == "header" and ex.lines[0]["format"] == "fetchml-audit-export/v1"
    seqs = [d["sequence_num"] for d in ex.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    last_event = 0
    for d in ex.lines[1:]:
        if d["kind"] == "event":
            last_event = d["sequence_num"]
        else:  # each checkpoint right after the event it covers
            assert d["kind"] == "checkpoint" and d["sequence_num"] == last_event
    assert len(ex.checkpoints()) >= 3

    result = assert_ok(offline(ex.path, ex.pub))
    assert "Audit chain valid" in result.stdout and f"{len(seqs)} events" in result.stdout
    as_json = json.loads(assert_ok(offline(ex.path, ex.pub, json_out=True)).stdout)
    assert as_json["valid"] is True and as_json["total_events"] == len(seqs)
    assert as_json["checkpoints_verified"] == len(ex.checkpoints())
    assert as_json["chain_root_hash"] == ex.events()[-1]["event_hash"]
    # Without --file, verify still asks the server.
    online = assert_ok(run(["audit", "verify", "--json"], cli_env(srv, k.admin)))
    assert json.loads(online.stdout)["valid"] is True


def test_an_edit_is_named_by_its_sequence_number(
    exported: tuple[ServerHandle, Keys, Export], tmp_path: Path
) -> None:
    _, _, ex = exported
    lines = [dict(d) for d in ex.lines]
    victim = next(d for d in lines if d["kind"] == "event" and d["sequence_num"] == 7)
    victim["user_id"] = "mallory"
    assert_names(offline(write(tmp_path / "edit.jsonl", lines), ex.pub), "first tampered event is #7")
    # Metadata too, nested.
    lines = [dict(d) for d in ex.lines]
    victim = next(d for d in lines if d["kind"] == "event" and d["event_type"] == "job_queued")
    victim["metadata"] = dict(victim["metadata"], priority=10)
    assert_names(
        offline(write(tmp_path / "edit2.jsonl", lines), ex.pub),
        f"first tampered event is #{victim['sequence_num']}",
    )


def test_a_deletion_is_named(exported: tuple[ServerHandle, Keys, Export], tmp_path: Path) -> None:
    _, _, ex = exported
    lines = [d for d in ex.lines if not (d["kind"] == "event" and d["sequence_num"] == 8)]
    result = offline(write(tmp_path / "delete.jsonl", lines), ex.pub)
    assert_names(result, "first tampered event is #8")
    assert "sequence gap" in result.stdout


def test_a_reorder_is_named(exported: tuple[ServerHandle, Keys, Export], tmp_path: Path) -> None:
    _, _, ex = exported
    lines = list(ex.lines)
    i = next(n for n, d in enumerate(lines) if d["kind"] == "event" and d["sequence_num"] == 9)
    j = next(n for n, d in enumerate(lines) if d["kind"] == "event" and d["sequence_num"] == 10)
    lines[i], lines[j] = lines[j], lines[i]
    assert_names(offline(write(tmp_path / "reorder.jsonl", lines), ex.pub), "first tampered event is #9")


def test_a_truncated_tail_is_named_by_its_checkpoint(
    exported: tuple[ServerHandle, Keys, Export], tmp_path: Path
) -> None:
    """The newest events are gone; what is left is a perfect chain. The newest checkpoint, which
    covers more than the file holds, gives it away."""
    _, _, ex = exported
    newest = ex.checkpoints()[-1]["sequence_num"]
    keep = newest - 2
    lines = [d for d in ex.lines if not (d["kind"] == "event" and d["sequence_num"] > keep)]
    result = offline(write(tmp_path / "truncated.jsonl", lines), ex.pub)
    assert_names(result, f"bad checkpoint at seq {newest}")
    assert "truncated tail" in result.stdout
    as_json = json.loads(offline(tmp_path / "truncated.jsonl", ex.pub, json_out=True).stdout)
    assert as_json["first_tampered"] == keep + 1 and as_json["bad_checkpoint"] == newest


def test_a_chain_rewritten_and_resigned_with_a_fresh_key_is_named(
    exported: tuple[ServerHandle, Keys, Export], tmp_path: Path
) -> None:
    """Whoever holds the database can rewrite every hash and link; only the signing key they do
    not have is missing. Re-signed with their own, every checkpoint fails the given public key."""
    _, _, ex = exported
    mallory = Ed25519PrivateKey.generate()
    prev, hashes = "0" * 64, {}
    lines = []
    for d in ex.lines:
        d = dict(d)
        if d["kind"] == "event":
            if d["sequence_num"] == 3:
                d["user_id"] = "mallory"
            d["prev_hash"] = prev
            d["event_hash"] = prev = hashes[d["sequence_num"]] = event_hash(prev, d)
        elif d["kind"] == "checkpoint":
            d["root"] = hashes[d["sequence_num"]]
            d["key_id"] = key_id_of(mallory.public_key())
            d["signature"] = sign_checkpoint(mallory, d["sequence_num"], d["root"], d["created_at"])
        lines.append(d)
    forged = write(tmp_path / "rewritten.jsonl", lines)
    first_cp = ex.checkpoints()[0]["sequence_num"]
    result = offline(forged, ex.pub)
    assert_names(result, f"bad checkpoint at seq {first_cp}")
    assert "unknown key" in result.stdout
    # The rewrite is internally perfect: with the forger's own key it would pass.
    mallory_pub = tmp_path / "mallory.pub"
    mallory_pub.write_text(public_key_pem(mallory.public_key()))
    assert_ok(offline(forged, mallory_pub))
    # Stripping the checkpoints instead leaves nothing signed, which fails too.
    unsigned = write(tmp_path / "unsigned.jsonl", [d for d in lines if d["kind"] != "checkpoint"])
    result = offline(unsigned, ex.pub)
    assert result.returncode == 1 and "no checkpoint" in result.stdout


def test_offline_verify_needs_a_public_key(exported: tuple[ServerHandle, Keys, Export]) -> None:
    _, _, ex = exported
    result = offline(ex.path)
    assert result.returncode == 2 and "--public-key" in result.stderr and result.stdout == ""


def test_an_export_of_a_database_that_lost_its_tail_fails_offline(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    srv = server_factory(FETCHML_AUDIT_CHECKPOINT_EVENTS="5", FETCHML_AUDIT_CHECKPOINT_SECONDS="3600")
    k = make_keys(srv)
    env = cli_env(srv, k.admin)
    with srv.http(k.user) as http:
        for i in range(8):
            assert http.post("/v1/tasks", json={"job_name": f"t{i}"}).status_code == 201
    deadline = time.monotonic() + 20
    with srv.http(k.admin) as http:
        while (
            not (cps := http.get("/v1/audit/checkpoints").json()["checkpoints"])
            or cps[-1]["sequence_num"] < 10
        ):
            assert time.monotonic() < deadline, cps
            time.sleep(0.05)
    newest = cps[-1]["sequence_num"]
    srv.db_exec("DELETE FROM audit_events WHERE sequence_num > ?", (newest - 3,))
    pub = tmp_path / "audit.pub"
    pub.write_text(assert_ok(run(["audit", "public-key"], env)).stdout)
    path = tmp_path / "audit.jsonl"
    assert_ok(run(["audit", "export", "--out", str(path)], env))
    result = offline(path, pub)
    assert_names(result, f"bad checkpoint at seq {newest}")
    assert "truncated tail" in result.stdout
