"""``python -m sink``: logging, settings, then the worker and its HTTP surface until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from shared.logs import setup_logging
from shared.service import run_service
from sink.app import create_sink
from sink.settings import SinkSettings


def main() -> int:
    settings = SinkSettings()
    setup_logging("sink", settings.log_level, settings.log_format, fields={"hop": "sink"})
    state, sink = create_sink(settings)
    asyncio.run(
        run_service(state, sink.run, host=settings.http_host, port=settings.http_port, shutdown_timeout=settings.shutdown_timeout_s)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
