"""``python -m live``: the live counters and the analytics page (settings from ``LIVE_*``)."""

from __future__ import annotations

import asyncio

from live.app import run
from live.settings import LiveSettings
from shared.logs import setup_logging


def main() -> None:
    settings = LiveSettings()
    setup_logging("live", settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
