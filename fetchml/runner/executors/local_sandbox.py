"""What a local task gets of the worker: the user it runs as (`run_as`), an allow-listed
environment with the labels that mark its processes, and, with `run_as`, its output folder taken
back before the worker reads it. See fetchml.runner.executors.local for the whole picture."""

from __future__ import annotations

import os
import pwd
import stat
import sys

from fetchml.runner.executors.base import ExecSpec, ExecutorError

# Environment variables that mark a process as belonging to an attempt (see remove_orphans).
LABEL_WORKER = "FETCHML_LABEL_WORKER"
LABEL_TASK = "FETCHML_LABEL_TASK"
LABEL_ATTEMPT = "FETCHML_LABEL_ATTEMPT"
LABEL_SERVER = "FETCHML_LABEL_SERVER"

# A task's PATH when the operator does not pass the worker's own (--pass-env PATH).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Taken from the worker's environment when set: locale and time zone only, nothing that may
# carry a secret. Anything else must be named by the operator (pass_env).
_PASSED_BY_DEFAULT = ("LANG", "LC_ALL", "TZ")
# Never handed to a task, even when an operator names them.
_SECRET_ENV = ("FETCHML_API_KEY", "FETCHML_API_KEY_FD")
# What a task run as another user may create (files 0600, folders 0700).
_TASK_UMASK = 0o077


def task_user(name: str) -> pwd.struct_passwd:
    """The account `run_as` names: it must exist, must not be root, and only root may switch to it."""
    try:
        user = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise ExecutorError(
            f"--run-as {name}: no such user on this machine (create one: useradd --system {name})"
        ) from None
    if user.pw_uid == 0 or user.pw_gid == 0:
        raise ExecutorError(
            f"--run-as {name}: tasks must run as an unprivileged user, not root or the root group"
        )
    if os.geteuid() != 0:
        raise ExecutorError(
            f"--run-as {name} needs the worker to run as root (it is uid {os.geteuid()}); "
            "without root, leave --run-as out and tasks run as the worker's own user"
        )
    return user


class EnvironmentMixin:
    """The environment half of LocalExecutor (fetchml.runner.executors.local)."""

    pass_env: tuple[str, ...]
    _user: pwd.struct_passwd | None

    def environment(self, spec: ExecSpec) -> dict[str, str]:
        # The worker's interpreter's folder first: `python`, `pip`, `torchrun` of the environment
        # fetchml runs in, as `.py` entry points get. HOME: the user's own when tasks run as the
        # worker's user (nothing to hide from them), the workspace when they run as another.
        bindir = os.path.dirname(sys.executable) if sys.executable else ""
        env = {
            "PATH": f"{bindir}:{DEFAULT_PATH}" if bindir else DEFAULT_PATH,
            "HOME": os.environ.get("HOME", "") if self._user is None else "",
        }
        env["HOME"] = env["HOME"] or str(spec.workspace)
        for name, value in os.environ.items():
            if name in _PASSED_BY_DEFAULT or name.startswith("CUDA_") or name in self.pass_env:
                env[name] = value
        for name in _SECRET_ENV:
            env.pop(name, None)
        env.update(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
        env[LABEL_WORKER] = spec.worker_id
        env[LABEL_SERVER] = spec.server_id or ""
        env[LABEL_TASK] = spec.task_id
        env[LABEL_ATTEMPT] = str(spec.attempt)
        return env


def _reclaim_outputs(spec: ExecSpec, task_uid: int) -> None:
    """Make the attempt's workspace and output folder the worker's again before the worker
    (root) reads them for upload.

    A process of the task's user may outlive the attempt (it left the group). Each folder is
    first made the worker's, mode 0700, and only then listed: from then on the task's user can
    no longer add, rename or swap entries in it, so what is listed is what is read. The
    workspace goes first, so `output` itself cannot be swapped for a link afterwards; an
    `output` that is not a real folder is removed. Files stay the task's (their content is its
    own); a file it does not own (a hard link to someone else's file) is removed, never
    uploaded. Links are never followed.
    """
    me, my_group = os.geteuid(), os.getegid()
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    output = spec.env.get("FETCHML_OUTPUT_DIR") or os.path.join(spec.workspace, "output")
    if os.path.dirname(os.path.abspath(output)) != os.path.abspath(spec.workspace):
        raise OSError(f"output folder {output} is not directly inside the workspace {spec.workspace}")
    name = os.path.basename(output)
    try:
        ws = os.open(spec.workspace, flags)
    except FileNotFoundError:
        return
    try:
        os.fchown(ws, me, my_group)
        os.fchmod(ws, 0o700)
        try:
            st = os.stat(name, dir_fd=ws, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=ws)
            return
        pending = [os.open(name, flags, dir_fd=ws)]
    finally:
        os.close(ws)
    while pending:
        fd = pending.pop()
        try:
            os.fchown(fd, me, my_group)
            os.fchmod(fd, 0o700)
            for entry in os.scandir(fd):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(os.open(entry.name, flags, dir_fd=fd))
                elif stat.S_ISREG(st.st_mode) and st.st_uid != task_uid:
                    os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)
