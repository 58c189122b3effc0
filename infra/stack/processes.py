"""Running things: commands that must succeed, readiness waits, and :class:`Proc`, a process tracked by a PID file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.stack.env import HOME

READY_TIMEOUT_S = 180.0


class StackError(RuntimeError):
    """A part of the stack could not be installed, started or reached; the message says which."""


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, check=False, text=True, capture_output=True, **kw)
    if res.returncode != 0:
        raise StackError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return res


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT_S, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # readiness probes fail in many ways until the part is up
            last_exc = exc
        time.sleep(0.5)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n--- last lines of " + str(log_file) + " ---\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
    raise StackError(f"{what} not ready after {timeout:.0f}s (last error: {last_exc!r}){tail}")


@dataclass
class Proc:
    """A long-running process this stack starts, tracked by a PID file."""

    name: str
    argv: Callable[[], list[str]]
    ready: Callable[[], bool]
    prepare: Callable[[], None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    marker: str = ""  # text the process's command line must contain; default: the stack home
    home: Path | None = None  # where its PID file and log live (and its cwd); default: the stack home

    @property
    def base(self) -> Path:
        return self.home or HOME

    @property
    def pid_file(self) -> Path:
        return self.base / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.base / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        # A recycled PID belongs to someone else: ours always mention the stack home (or marker).
        return pid if (self.marker or str(self.base)) in cmdline.replace("\0", " ") else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> bool:
        if self.running():
            return False
        self.prepare()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        with self.log_file.open("ab") as out:
            p = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **self.env},
                cwd=self.base,
            )
        self.pid_file.write_text(str(p.pid))
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            _reap(pid)
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
