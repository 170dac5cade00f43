"""API8 (security misconfiguration): what a task run by the local executor can reach of the
worker that runs it, of the server, and of their files.

Real processes throughout: a real server, real `fetchml worker --executor local --run-as
fetchml-task` and `fetchml serve --worker-run-as fetchml-task` processes (the tests run as root,
as .ci/run does), and tasks that attack their parent from the shell. The unprivileged account
is created here when missing (`useradd --system`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fetchml.runner.executors.base import ExecSpec
from fetchml.runner.executors.local import LABEL_ATTEMPT, LABEL_TASK, LABEL_WORKER, LocalExecutor
from tests.backends import skip_or_fail
from tests.e2e.conftest import FAST_LEASES, Cluster, running_cluster
from tests.harness import REPO, ServerHandle, ServerPool, die_with_parent, free_port, run_cli

TASK_USER = "fetchml-task"
MARKER = "FETCHML_ISOLATION_MARKER_7f3c"


@pytest.fixture(scope="module")
def task_user() -> pwd.struct_passwd:
    """The unprivileged account tasks run as; created when missing (needs root)."""
    if os.geteuid() != 0:
        skip_or_fail("needs root: the worker switches to another user")
    try:
        return pwd.getpwnam(TASK_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TASK_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(TASK_USER)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder every user may traverse (pytest's tmp_path sits in a 0700 folder, which would
    hide everything from the task user whatever fetchml does, proving nothing)."""
    base = Path(tempfile.mkdtemp(prefix="fetchml-isolation-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(server_pool: ServerPool, open_tmp: Path) -> Iterator[Cluster]:
    with running_cluster(server_pool, open_tmp, {MARKER: "worker-env-secret"}) as c:
        yield c


def _probe(data_dir: Path, work_dir: Path | None) -> str:
    """A shell script that attacks its parent (the worker) and the files around it, printing
    one verdict per attempt: upper case when the attack worked."""
    steps = [
        "echo uid=$(id -u)",
        'cat /proc/$PPID/environ >/dev/null 2>&1 && echo ENVIRON-READ || echo environ-denied',
        'ls /proc/$PPID/fd >/dev/null 2>&1 && echo FDS-READ || echo fds-denied',
        "tr '\\000' ' ' </proc/$PPID/cmdline | grep -q fml_ && echo KEY-IN-CMDLINE || echo cmdline-clean",
        f'env | grep -q {MARKER} && echo MARKER-SEEN || echo marker-absent',
        'env | grep -q fml_ && echo KEY-IN-ENV || echo env-clean',
        f"cat {data_dir}/fetchml.db >/dev/null 2>&1 && echo DB-READ || echo db-denied",
        f"ls {data_dir} >/dev/null 2>&1 && echo DATA-LISTED || echo data-denied",
        f"touch {data_dir}/planted 2>/dev/null && echo DATA-WRITTEN || echo data-write-denied",
    ]
    if work_dir is not None:
        steps += [
            f"ls {work_dir} >/dev/null 2>&1 && echo WORK-LISTED || echo work-denied",
            f"ls {work_dir}/snapshots >/dev/null 2>&1 && echo CACHE-LISTED || echo cache-denied",
            f"ls {work_dir}/workspaces >/dev/null 2>&1 && echo WORKSPACES-LISTED || echo workspaces-denied",
        ]
    steps += [
        'echo home=$HOME',
        'echo made-by-task > "$FETCHML_OUTPUT_DIR/proof.txt" && echo output-written',
        'kill -9 $PPID 2>/dev/null && echo PARENT-KILLED || echo kill-denied',
        "echo probe-done",
    ]
    return "sh -c " + shlex.quote("; ".join(steps))


DENIED = [
    "environ-denied",
    "fds-denied",
    "cmdline-clean",
    "marker-absent",
    "env-clean",
    "db-denied",
    "data-denied",
    "data-write-denied",
]


def test_run_as_task_cannot_read_signal_or_reach_the_worker(
    cluster: Cluster, task_user: pwd.struct_passwd, open_tmp: Path
) -> None:
    work_dir = open_tmp / "work-w1"
    key = cluster.server.make_key("wk-w1", "worker", worker_name="w1")
    worker = cluster.start_worker("w1", "--executor", "local", "--run-as", TASK_USER, key=key)
    # The key came in FETCHML_API_KEY: the worker executed itself again without it, so not even
    # its /proc environ (the original environment block) holds it any more. Read as root here.
    worker_environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
    assert key.encode() not in worker_environ and b"FETCHML_API_KEY=" not in worker_environ
    assert key not in " ".join(psutil.Process(worker.pid).cmdline())

    tid = cluster.submit(entrypoint=_probe(cluster.server.data_dir, work_dir))
    t = cluster.wait_status(tid, "completed", "failed", timeout=60)
    lines = cluster.logs(tid)
    assert "probe-done" in lines, (t, lines, cluster.worker_log("w1"))
    assert f"uid={task_user.pw_uid}" in lines
    for verdict in [*DENIED, "work-denied", "cache-denied", "workspaces-denied", "kill-denied"]:
        assert verdict in lines, (verdict, lines)
    assert not [line for line in lines if line.isupper() and "-" in line], lines
    assert not (cluster.server.data_dir / "planted").exists()
    # HOME is the attempt's workspace, and what the task wrote there is its artifact.
    assert any(line.startswith("home=") and line.endswith(f"{tid}-1") for line in lines), lines
    assert t["status"] == "completed", t
    with cluster.server.http(cluster.admin) as http:
        assert http.get(f"/v1/tasks/{tid}/artifacts/proof.txt").text.strip() == "made-by-task"

    # The worker lived through it and still runs tasks.
    assert worker.poll() is None
    again = cluster.submit(entrypoint="sh -c 'echo still-here'")
    assert cluster.wait_status(again, "completed", "failed")["status"] == "completed"


def test_output_files_the_task_does_not_own_are_never_uploaded(
    cluster: Cluster, task_user: pwd.struct_passwd, open_tmp: Path
) -> None:
    """A file of another user hard-linked into the output folder (possible where
    fs.protected_hardlinks is off) must not be read by the root worker on the task's behalf."""
    secret = open_tmp / "root-only.txt"
    secret.write_text("root secret\n")
    os.chmod(secret, 0o600)
    cluster.start_worker("w1", "--executor", "local", "--run-as", TASK_USER)
    # The task cannot link a file it may not read on most systems; plant the link the way such a
    # system would let it, while the task waits, then let it finish.
    gate = open_tmp / "gate"
    tid = cluster.submit(
        entrypoint="sh -c "
        + shlex.quote(
            'echo "$FETCHML_OUTPUT_DIR"; echo mine > "$FETCHML_OUTPUT_DIR/mine.txt"; '
            f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"
        )
    )
    out_line = cluster.wait_for(lambda: [x for x in cluster.logs(tid) if x.startswith("/")], what="output path")
    output = Path(out_line[0])
    os.link(secret, output / "stolen.txt")
    gate.touch()
    t = cluster.wait_status(tid, "completed", "failed", timeout=60)
    with cluster.server.http(cluster.admin) as http:
        names = [a["path"] for a in http.get(f"/v1/tasks/{tid}/artifacts").json()]
    assert names == ["mine.txt"], (t, names)
    assert secret.read_text() == "root secret\n" and secret.stat().st_uid == 0


def test_run_as_cancel_and_orphan_removal_reach_the_other_users_processes(
    task_user: pwd.struct_passwd, open_tmp: Path
) -> None:
    ws = open_tmp / "ws"
    (ws / "snapshot").mkdir(parents=True)
    (ws / "output").mkdir()
    for p in (ws, ws / "snapshot", ws / "output"):
        os.chown(p, task_user.pw_uid, task_user.pw_gid)
    worker_id = "w-iso-" + uuid.uuid4().hex[:8]

    def spec(task: str) -> ExecSpec:
        return ExecSpec(
            task_id=task,
            attempt=1,
            worker_id=worker_id,
            command=["sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"],
            workspace=ws,
            workdir=ws / "snapshot",
        )

    ex = LocalExecutor(stop_grace=1, run_as=TASK_USER)
    try:
        execution = ex.start(spec("t-cancel"))
        lines = execution.lines()
        assert next(lines) == "up"
        assert psutil.Process(execution.pid).uids().real == task_user.pw_uid
        execution.stop(1)
        status = execution.wait(10)
        assert status is not None and status.cancelled
        assert not _members(execution.pgid)

        # An attempt left behind by a worker that died: a new executor finds it by its labels.
        left = ex.start(spec("t-orphan"))
        assert next(left.lines()) == "up"
        fresh = LocalExecutor(stop_grace=1, run_as=TASK_USER)
        removed = fresh.remove_orphans(worker_id, set())
        assert len(removed) == 3  # sh and its two sleeps, all the task user's
        assert left.wait(10) is not None
        deadline = time.monotonic() + 5
        while _members(left.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _members(left.pgid)
    finally:
        ex.shutdown(0)


def _members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
    return out


def test_labels_are_set_for_run_as_tasks(task_user: pwd.struct_passwd, open_tmp: Path) -> None:
    ws = open_tmp / "ws"
    (ws / "snapshot").mkdir(parents=True)
    ex = LocalExecutor(run_as=TASK_USER)
    env = ex.environment(
        ExecSpec(task_id="t", attempt=2, worker_id="w", command=["true"], workspace=ws, workdir=ws)
    )
    assert env[LABEL_WORKER] == "w" and env[LABEL_TASK] == "t" and env[LABEL_ATTEMPT] == "2"


# -- `fetchml serve` ---------------------------------------------------------------------------


def test_serve_beyond_loopback_refuses_a_same_user_embedded_worker(open_tmp: Path) -> None:
    data_dir = open_tmp / "data"
    port = free_port()
    for extra in ([], ["--worker-executor", "local"]):
        r = run_cli(
            ["serve", "--host", "0.0.0.0", "--port", str(port), "--data-dir", str(data_dir), *extra],
            env=ServerHandle(data_dir=data_dir).env(),
            timeout=60,
        )
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "refusing to serve on 0.0.0.0" in r.stderr
        for hint in ("--worker-executor docker", "--worker-run-as", "--no-worker"):
            assert hint in r.stderr
    # Refused before anything was opened or bound.
    assert not (data_dir / "fetchml.db").exists()
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", port))  # nobody holds the port


def test_serve_worker_run_as_needs_an_existing_unprivileged_user(open_tmp: Path) -> None:
    env = ServerHandle(data_dir=open_tmp / "d").env()
    r = run_cli(["serve", "--port", str(free_port()), "--worker-run-as", "root"], env=env)
    assert r.returncode == 2 and "not root" in r.stderr, r.stderr
    r = run_cli(["serve", "--port", str(free_port()), "--worker-run-as", "no-such-user-xyz"], env=env)
    assert r.returncode == 2 and "no such user" in r.stderr, r.stderr


def test_serve_embedded_worker_run_as_cannot_reach_the_servers_data(
    task_user: pwd.struct_passwd, open_tmp: Path
) -> None:
    """The reported attack: a task of the embedded worker made an admin key through the data
    dir. With --worker-run-as, the task cannot open the database, list or write the data dir,
    nor read or signal the server it runs under."""
    data_dir = open_tmp / "data"
    handle = ServerHandle(data_dir=data_dir, env_extra={**FAST_LEASES, MARKER: "server-env-secret"})
    user = handle.make_key("alice", "user")
    handle.log_path = open_tmp / "serve.log"
    handle.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fetchml",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(handle.port),
            "--data-dir",
            str(data_dir),
            "--worker-run-as",
            TASK_USER,
        ],
        env=handle.env(),
        stdout=handle.log_path.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        preexec_fn=die_with_parent,
    )
    try:
        handle.wait_ready(60)
        attack = (
            f"{sys.executable} -m fetchml keys create --user mallory --role admin --data-dir {data_dir} "
            ">/dev/null 2>&1 && echo ADMIN-KEY-MADE || echo admin-key-refused"
        )
        probe = _probe(data_dir, None)[len("sh -c ") :]
        script = shlex.split(probe)[0] + "; " + attack
        with handle.http(user) as http:
            r = http.post("/v1/tasks", json={"job_name": "iso", "entrypoint": "sh -c " + shlex.quote(script)})
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                t = http.get(f"/v1/tasks/{tid}").json()
                if t["status"] in ("completed", "failed"):
                    break
                time.sleep(0.1)
            lines = http.get(f"/v1/tasks/{tid}/logs").json()["lines"]
        assert "probe-done" in lines, (t, lines, handle.log())
        assert f"uid={task_user.pw_uid}" in lines
        for verdict in [*DENIED, "kill-denied", "admin-key-refused"]:
            assert verdict in lines, (verdict, lines)
        assert handle.proc.poll() is None  # the server lived through it
        assert not handle.db_exec("SELECT id FROM api_keys WHERE user_id = 'mallory'")
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    finally:
        if handle.proc.poll() is None:
            handle.proc.send_signal(signal.SIGTERM)
        try:
            handle.proc.wait(30)
        except subprocess.TimeoutExpired:
            handle.proc.kill()
            handle.proc.wait(5)


def test_run_as_is_refused_when_the_worker_is_not_root(
    task_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fetchml.runner.executors.base import ExecutorError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ExecutorError, match="needs the worker to run as root"):
        LocalExecutor(run_as=TASK_USER)


# -- the worker's key ----------------------------------------------------------------------------


def _worker_cli(url: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(["worker", "--server", url, "--executor", "local", *args], env=env, timeout=60)


def test_worker_refuses_a_key_on_its_command_line(tmp_path: Path) -> None:
    env = ServerHandle(data_dir=tmp_path / "unused").env()
    r = _worker_cli(f"http://127.0.0.1:{free_port()}", "--api-key", "fml_in_argv_0123456789", env=env)
    assert r.returncode == 2, r.stderr
    assert "--api-key is refused" in r.stderr and "FETCHML_API_KEY" in r.stderr and "--api-key-file" in r.stderr
    assert "fml_in_argv" not in r.stderr


def test_worker_refuses_a_key_file_others_may_read(tmp_path: Path) -> None:
    env = ServerHandle(data_dir=tmp_path / "unused").env()
    key_file = tmp_path / "worker.key"
    key_file.write_text("fml_in_a_loose_file_0123\n")
    for loose in (0o644, 0o640, 0o602):
        os.chmod(key_file, loose)
        r = _worker_cli(f"http://127.0.0.1:{free_port()}", "--api-key-file", str(key_file), env=env)
        assert r.returncode == 2, r.stderr
        assert f"chmod 600 {key_file}" in r.stderr and f"{loose:04o}" in r.stderr


def test_worker_runs_with_a_key_file_and_keeps_the_key_out_of_proc(cluster: Cluster, open_tmp: Path) -> None:
    key = cluster.server.make_key("wk-kf", "worker", worker_name="kf")
    key_file = open_tmp / "worker.key"
    key_file.write_text(key + "\n")
    os.chmod(key_file, 0o600)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fetchml",
            "worker",
            "--server",
            cluster.server.url,
            "--api-key-file",
            str(key_file),
            "--name",
            "kf",
            "--executor",
            "local",
            "--work-dir",
            str(open_tmp / "work-kf"),
        ],
        cwd=REPO,
        env=cluster.server.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    cluster.workers.append(proc)
    cluster.wait_for(
        lambda: any(w["id"] == "kf" and w["status"] == "active" for w in cluster.workers_info()),
        what="the worker to register",
    )
    tid = cluster.submit(entrypoint="sh -c 'env; echo done'")
    assert cluster.wait_status(tid, "completed", "failed")["status"] == "completed"
    assert not [line for line in cluster.logs(tid) if key in line or MARKER in line]
    assert key.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
    assert key not in " ".join(psutil.Process(proc.pid).cmdline())
