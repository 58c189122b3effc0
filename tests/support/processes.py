"""Run a process in a test (:class:`ProcessHandle`: start, kill -9, SIGTERM, its log) and a service
as a real subprocess (:class:`ServiceProcess`: plus wait ready, read HTTP)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessHandle:
    """A subprocess a test starts, with its output appended to a log file: start, alive, kill -9,
    SIGTERM (timed), stop quietly, the log's last lines. :class:`ServiceProcess` adds a service's
    HTTP port; a service's own test helpers can build on either."""

    def __init__(
        self, label: str, argv: list[str], env: Mapping[str, str], *, log_path: Path, cwd: Path | None = None, new_session: bool = False
    ) -> None:
        self.label, self.argv, self.cwd, self.new_session = label, argv, cwd, new_session
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.label} {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=self.new_session
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no flush, no commit, no goodbye."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def stop_quietly(self, timeout: float = 15) -> None:
        """SIGTERM, then kill -9 if it has not exited within ``timeout`` seconds."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ServiceProcess(ProcessHandle):
    """``python -m <module>`` with the test's environment on top of the current one, answering HTTP on ``port``."""

    def __init__(self, label: str, module: str, env: Mapping[str, str], *, port: int, log_dir: Path) -> None:
        super().__init__(
            label, [sys.executable, "-m", module], {**os.environ, "PYTHONUNBUFFERED": "1", **env}, log_path=log_dir / f"{label}.log"
        )
        self.module, self.port = module, port

    def get(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        """(status, parsed JSON or text) of GET path; (0, error) when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return resp.status, _body(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _body(err.read())
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.label} exited with {self.proc.returncode if self.proc else '?'}:\n{self.tail()}")
            if self.get("/ready")[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"{self.label} not ready after {timeout}s:\n{self.tail()}")


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
