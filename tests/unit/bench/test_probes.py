"""bench.probes.run_cleaning_up: a benchmark stopped by SIGTERM or SIGINT still runs its cleanup."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from bench.probes import run_cleaning_up

    async def bench():
        try:
            print("running", flush=True)
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # an async cleanup (dropping topics) gets to run too
            print("cleaned up", flush=True)

    run_cleaning_up(bench())
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_the_benchmark_and_its_finally_blocks_run(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert out.strip() == "cleaned up", err
    assert proc.returncode != 0  # stopped, not finished: the exit says so
    assert "CancelledError" in err


def test_without_a_signal_the_result_is_returned() -> None:
    code = "from bench.probes import run_cleaning_up\nasync def f():\n    return 42\nprint(run_cleaning_up(f()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "42", out.stderr
