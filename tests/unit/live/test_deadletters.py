"""The page's dead-letters panel: counts by stage and class, newest first, reasons escaped."""

from __future__ import annotations

from live.deadletters import DeadLetterPanel, panel_html, panel_of

from shared import dlq
from shared.dlqtool.letters import letter_of


def _letter(offset: int, stage: str, error_class: str, ts: int, message: str = "why"):
    record = dlq.dead_letter_record(
        None,
        b"x",
        [],
        source_topic="t",
        source_partition=0,
        source_offset=offset,
        stage=stage,
        error_class=error_class,
        error_message=message,
    )
    return letter_of("dlq", 0, offset, ts, record.key, record.value, record.headers)


def test_panel_counts_by_stage_and_class_newest_first() -> None:
    letters = [
        _letter(0, "bridge.decode", "NotJSON", 1_000),
        _letter(1, "sink.write", "WriteError", 5_000, "old"),
        _letter(2, "sink.write", "WriteError", 9_000, "<b>new</b>"),
    ]
    panel = panel_of(letters)
    assert panel.total == 3
    assert [(c.stage, c.error_class, c.count, c.newest_message) for c in panel.classes] == [
        ("sink.write", "WriteError", 2, "<b>new</b>"),
        ("bridge.decode", "NotJSON", 1, "why"),
    ]
    html = panel_html(panel)
    assert html.startswith('<section id="dead-letters">') and "&lt;b&gt;new&lt;/b&gt;" in html and "<b>new" not in html
    assert "3 in the last 24 hours" in html


def test_panel_without_letters_or_broker() -> None:
    assert "no dead letters in the last 24 hours" in panel_html(panel_of([]))
    assert '<p class="error">dead letters not available: down</p>' in panel_html(DeadLetterPanel(error="dead letters not available: down"))
