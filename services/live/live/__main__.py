"""``python -m live``: the live counters and the analytics page (settings from ``LIVE_*``)."""

from __future__ import annotations

import asyncio
import logging

from live.app import run
from live.settings import LiveSettings
from shared.logs import setup_logging


def _not_buffer_full(record: logging.LogRecord) -> bool:
    # faust logs a WARNING each time its 100-message producer buffer fills: normal back-pressure
    # under load (it then flushes), not a problem; everything else from that logger stays.
    return not record.getMessage().startswith("producer buffer full")


def main() -> None:
    settings = LiveSettings()
    setup_logging("live", settings.log_level, settings.log_format, fields={"hop": "live"})
    logging.getLogger("faust.transport.producer").addFilter(_not_buffer_full)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
