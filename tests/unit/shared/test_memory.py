"""shared.memory: freed heap really leaves the process, and the periodic task calls the trim."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from shared import memory

# A backlog's shape: many malloc'd byte strings of mixed sizes, a few kept alive between them
# (what pins glibc's heap pages), then all but the kept ones freed.
_PROBE = """
import random, sys
from shared.memory import release_free_heap
def rss_mib():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
rng = random.Random(7)
kept, backlog = [], []
for i in range(200_000):
    backlog.append(bytes(rng.randint(200, 2000)))
    if i % 500 == 0:
        kept.append(bytes(64))
del backlog
freed = rss_mib()
trimmed_ok = release_free_heap()
print(freed, rss_mib(), trimmed_ok)
"""


def test_freed_heap_is_returned_to_the_kernel() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.split()
    freed, trimmed, ok = float(out[0]), float(out[1]), out[2]
    assert ok == "True"  # glibc: this machine's and the service images' C library
    # ~220 MiB allocated; the kept strings pin pages all over it. Before the trim most of it is
    # still resident; after it, what is left is the interpreter and the kept strings.
    assert freed > 100
    assert trimmed < freed / 2, (freed, trimmed)


async def test_the_periodic_task_trims_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    loop, three = asyncio.get_running_loop(), asyncio.Event()

    def trim(pad: int) -> int:  # runs in the task's thread
        calls.append(pad)
        if len(calls) == 3:
            loop.call_soon_threadsafe(three.set)
        return 1

    monkeypatch.setattr(memory, "_MALLOC_TRIM", trim)
    task = asyncio.create_task(memory.release_free_heap_every(0.01))
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(calls) == {0} and len(calls) >= 3


async def test_no_interval_means_no_trimming(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    await asyncio.wait_for(memory.release_free_heap_every(0), 1)
    assert calls == []
