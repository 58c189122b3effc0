"""Test configuration shared by every test.

Integration tests run against the real local stack (``./pipeline stack up``); its addresses and
generated credentials are in ``.stack/stack.env``, loaded here into ``os.environ`` so that the
services' settings classes read them exactly as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

pytest_plugins = ["tests.support.exclusive"]

REPO = Path(__file__).resolve().parent.parent
STACK_ENV = Path(os.environ.get("STACK_HOME", REPO / ".stack")) / "stack.env"


# Every JVM a test starts (Spark jobs and a standalone Spark, private Kafka clusters, a restarted
# broker, Kafka's CLI tools) lives seconds to minutes: the C1 compiler alone (no C2) cuts an ETL
# test's CPU by 39 % (132 -> 81 core-seconds for test_star_schema; tests/README.md) without
# changing what any code does. No GC flag: Kafka's scripts choose G1 and a second collector stops
# the JVM. The stack's long-running brokers start without it. Set JAVA_TOOL_OPTIONS (even empty)
# to override.
TEST_JAVA_TOOL_OPTIONS = "-XX:TieredStopAtLevel=1"


def pytest_configure(config) -> None:
    os.environ.setdefault("JAVA_TOOL_OPTIONS", TEST_JAVA_TOOL_OPTIONS)
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                os.environ.setdefault(key, value)
