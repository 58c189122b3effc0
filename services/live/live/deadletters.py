"""The page's "dead letters" panel: counts by stage and class over the last 24 hours, newest reasons.

The letters are read from the dead-letter topic (``LIVE_DLQ_TOPIC``) by the dead-letter tool's
Kafka layer and counted by its pure :func:`shared.dlqtool.letters.stats_of`, the numbers
``./pipeline dlq stats --since 24h`` prints. A read is cached ``cache_s`` seconds (the page may be
open in many tabs) and never fails the page: an unreachable broker is said in the panel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from pydantic import BaseModel

from shared.dlqtool.kafka_io import read_letters
from shared.dlqtool.letters import Letter, iso_ms, stats_of
from shared.errors import is_retriable
from shared.kafka import KafkaConnection

WINDOW_S = 24 * 3600


class DeadLetterClass(BaseModel):
    stage: str
    error_class: str
    count: int
    newest: str
    newest_message: str


class DeadLetterPanel(BaseModel):
    """``error``: why the counts are missing (the panel says so instead)."""

    window_hours: int = WINDOW_S // 3600
    total: int = 0
    classes: list[DeadLetterClass] = []
    error: str | None = None


def panel_of(letters: Sequence[Letter], window_s: int = WINDOW_S) -> DeadLetterPanel:
    rows = sorted(stats_of(letters), key=lambda r: (-r.newest_ms, r.stage, r.error_class))
    classes = [
        DeadLetterClass(
            stage=r.stage, error_class=r.error_class, count=r.count, newest=iso_ms(r.newest_ms), newest_message=r.newest_message
        )
        for r in rows
    ]
    return DeadLetterPanel(window_hours=window_s // 3600, total=sum(r.count for r in rows), classes=classes)


def panel_html(panel: DeadLetterPanel) -> str:
    """The ``dead-letters`` section: one row per stage and class, the newest first."""
    if panel.error:
        body = f'<p class="error">{escape(panel.error)}</p>'
    elif not panel.classes:
        body = f'<p class="empty">no dead letters in the last {panel.window_hours} hours</p>'
    else:
        rows = "".join(
            f"<tr><td>{escape(c.stage)}</td><td>{escape(c.error_class)}</td><td>{c.count}</td><td>{escape(c.newest)}</td>"
            f"<td>{escape(c.newest_message[:200])}</td></tr>"
            for c in panel.classes
        )
        head = "<tr><th>stage</th><th>class</th><th>count</th><th>newest</th><th>newest reason</th></tr>"
        body = f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
    note = f'<p class="muted">{panel.total} in the last {panel.window_hours} hours; work with them: <code>./pipeline dlq</code></p>'
    return f'<section id="dead-letters">{note}{body}</section>'


class DeadLetterReader:
    def __init__(self, conn: KafkaConnection, topic: str, *, cache_s: float = 30.0, timeout_s: float = 10.0) -> None:
        self._conn, self._topic, self._cache_s, self._timeout_s = conn, topic, cache_s, timeout_s
        self._cached: tuple[float, DeadLetterPanel] | None = None

    async def read(self) -> DeadLetterPanel:
        now = time.time()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            return self._cached[1]
        try:
            letters = await read_letters(self._conn, self._topic, since_ms=int((now - WINDOW_S) * 1000), timeout_s=self._timeout_s)
        except Exception as exc:
            if not is_retriable(exc):
                raise
            return DeadLetterPanel(error=f"dead letters not available: {exc or type(exc).__name__}")
        panel = panel_of(letters)
        self._cached = (now, panel)
        return panel
