"""Test configuration shared by every test.

Integration tests run against the real local stack (``./pipeline stack up``); its addresses and
generated credentials are in ``.stack/stack.env``, loaded here into ``os.environ`` so that the
services' settings classes read them exactly as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STACK_ENV = Path(os.environ.get("STACK_HOME", REPO / ".stack")) / "stack.env"


def pytest_configure(config) -> None:
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                os.environ.setdefault(key, value)
