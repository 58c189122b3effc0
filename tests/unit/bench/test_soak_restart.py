"""A fault's restart-to-ready time is measured from the restart while the fault goes on: a double
fault whose second half takes a minute must not add that minute to its first half's restart
(the hour soak of 2026-12-06 reported a sink ready 60.3 s after its restart that way, while its
alert had resolved 50 s before)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.soak.faults import FaultRecord, slowest_restart, time_restart


@dataclass
class FakeService:
    """``ready`` once ``ready_after_s`` have passed since ``started_at``."""

    ready_after_s: float
    started_at: float = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()

    async def ready(self, client: object) -> bool:
        return time.monotonic() - self.started_at >= self.ready_after_s


async def restarted(ready_after_s: float) -> FaultRecord:
    svc = FakeService(ready_after_s)
    svc.start()
    record = FaultRecord(0, "kill-sink")
    record.restart_watch = asyncio.create_task(time_restart(svc, record, every_s=0.01))  # type: ignore[arg-type]
    return record


async def test_a_double_faults_restart_time_is_its_slowest_half_timed_from_each_restart() -> None:
    one = await restarted(0.2)
    await asyncio.sleep(2.0)  # the second half of the double runs long after the first restart
    two = await restarted(0.1)
    double = FaultRecord(0, "double")
    double.restart_watch = asyncio.create_task(slowest_restart(double, (one, two)))
    await double.restart_watch
    assert one.restart_ready_s is not None and 0.2 <= one.restart_ready_s < 1.5  # not the 2 s the second half took
    assert two.restart_ready_s is not None and 0.1 <= two.restart_ready_s < 1.5
    assert double.restart_ready_s == max(one.restart_ready_s, two.restart_ready_s)


async def test_a_restart_never_ready_leaves_its_time_unknown() -> None:
    svc = FakeService(ready_after_s=60.0)
    svc.start()
    record = FaultRecord(0, "kill-live")
    await time_restart(svc, record, timeout_s=0.1, every_s=0.01)  # type: ignore[arg-type]
    assert record.restart_ready_s is None
    double = FaultRecord(0, "double")
    await slowest_restart(double, (record, FaultRecord(0, "proxy-slow")))
    assert double.restart_ready_s is None
