"""A process that exits on its own during a soak is recorded, started again like a supervisor
would, and fails the soak (the hour soak of 2026-12-07 ran on for 8 minutes with its sink dead,
which only its drain would have shown, 15 minutes after the traffic)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak.runner import Options, Result, restart_crashed
from bench.soak.services import Service


@dataclass
class FakePipeline:
    services: dict[str, Any] = field(default_factory=dict)


def service(tmp_path: Path, name: str, code: str) -> Service:
    svc = Service(name, 1, {}, 0, tmp_path / f"{name}.log")
    svc.log.write_text(f"{name} says goodbye\n")
    svc.proc = subprocess.Popen([sys.executable, "-c", code])
    svc.proc.wait()
    return svc


async def test_a_crash_is_recorded_once_and_restarted_a_kill_is_not(tmp_path: Path) -> None:
    crashed = service(tmp_path, "sink", "raise SystemExit(3)")
    killed = service(tmp_path, "bridge", "raise SystemExit(0)")
    killed.signalled = True  # a fault sent it a kill
    starts: list[str] = []
    crashed.start = lambda: starts.append("sink")  # type: ignore[method-assign]
    killed.start = lambda: starts.append("bridge")  # type: ignore[method-assign]
    result = Result(Options(), "t", time.time())
    halt = asyncio.Event()
    task = asyncio.create_task(restart_crashed(FakePipeline({"sink": crashed, "bridge": killed}), result, halt, every_s=0.05, delay_s=0.1))  # type: ignore[arg-type]
    await asyncio.sleep(0.6)
    halt.set()
    await task
    assert starts == ["sink"]
    assert [(e["process"], e["code"]) for e in result.unexpected_exits] == [("sink", 3)]
    assert "sink says goodbye" in result.unexpected_exits[0]["tail"]


def test_signalled_is_set_by_a_kill_and_cleared_by_a_start(tmp_path: Path) -> None:
    import signal

    svc = service(tmp_path, "live", "pass")
    assert svc.crashed() == 0
    svc.signal(signal.SIGSTOP)
    assert not svc.signalled
    svc.signal(signal.SIGKILL)
    assert svc.signalled and svc.crashed() is None
