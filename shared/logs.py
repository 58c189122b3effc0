"""One logging setup for every service: one line per record, key=value, UTC timestamps."""

from __future__ import annotations

import logging
import time


def setup_logging(service: str, level: str = "INFO") -> None:
    fmt = f"%(asctime)s.%(msecs)03dZ %(levelname)s {service} %(name)s: %(message)s"
    formatter = logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
