"""``python -m bridge``: settings from the environment, logging, then the service until SIGTERM."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sys

from bridge.app import create_bridge
from bridge.settings import BridgeSettings
from shared.logs import setup_logging
from shared.service import run_service

log = logging.getLogger("bridge")


def dump_tasks() -> None:
    """SIGUSR1: logs the stack of every asyncio task (where is a stuck bridge waiting?)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()}\n")
        task.print_stack(file=out)
    log.warning("asyncio tasks:\n%s", out.getvalue())


async def serve(settings: BridgeSettings) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    state, bridge = create_bridge(settings)
    await run_service(state, bridge.run, host=settings.http_host, port=settings.http_port, shutdown_timeout=settings.shutdown_timeout_s)


def main() -> None:
    # Until run_service owns the signals, SIGTERM/SIGINT mean "nothing is open yet: exit 0".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    settings = BridgeSettings()
    setup_logging("bridge", settings.log_level, settings.log_format, fields={"hop": "bridge"})
    log.info(
        "starting: %s → %s (remote %s, local %s), settings %s",
        settings.remote_topic,
        settings.local_topic,
        settings.remote_kafka.masked(),
        settings.local_kafka.masked(),
        settings.model_dump(),
    )
    asyncio.run(serve(settings))
    log.info("exited cleanly")


if __name__ == "__main__":
    main()
