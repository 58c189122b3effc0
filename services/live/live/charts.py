"""Server-side SVG charts. Pure: data in, markup out; no JavaScript, no assets, no fonts to load.

Each data point is one element with ``class="point"``, ``data-label`` and ``data-value`` (and a
``<title>`` tooltip), so a test or a screen reader reads the exact numbers the chart draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

EMPTY = '<p class="empty">no data yet</p>'
BAR = "#3b6ea5"
AXIS = "#888"


def _attr(text: str) -> str:
    return escape(text, quote=True)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_attr(title)}">'
    )


def _nice_max(value: int) -> int:
    """The axis maximum: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def column_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, int]],
    *,
    tick: Callable[[str], str] = str,
    width: int = 720,
    height: int = 220,
) -> str:
    """Vertical bars over an ordered axis (time series). ``points``: (label, value), oldest first;
    ``tick`` shortens a label for the axis (the full label stays on the point)."""
    if not points or not any(value for _, value in points):
        return f'<figure id="{_attr(chart_id)}" class="chart"><figcaption>{escape(title)}</figcaption>{EMPTY}</figure>'
    left, bottom, top = 48, 36, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    y_max = _nice_max(max(value for _, value in points))
    slot = plot_w / len(points)
    bar_w = max(1.0, slot * 0.8)
    parts = [
        _svg_open(width, height, title),
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{AXIS}"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{y_max}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    label_every = max(1, len(points) // 8)
    for i, (label, value) in enumerate(points):
        h = plot_h * value / y_max
        x = left + i * slot + (slot - bar_w) / 2
        parts.append(
            f'<rect class="point" data-label="{_attr(label)}" data-value="{value}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{bar_w:.1f}" height="{h:.1f}" fill="{BAR}"><title>{escape(label)}: {value}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 20}" text-anchor="middle" font-size="10">{escape(tick(label))}</text>'
            )
    parts.append("</svg>")
    return f'<figure id="{_attr(chart_id)}" class="chart"><figcaption>{escape(title)}</figcaption>{"".join(parts)}</figure>'


def bar_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, int]],
    *,
    keys: Sequence[str] | None = None,
    width: int = 720,
    row_h: int = 22,
) -> str:
    """Horizontal bars for categories, largest first. ``points``: (label, value); ``keys``: an id
    per point (``data-key``, e.g. the product id next to its name in the label)."""
    if not points:
        return f'<figure id="{_attr(chart_id)}" class="chart"><figcaption>{escape(title)}</figcaption>{EMPTY}</figure>'
    label_w, value_w = 300, 70
    plot_w = width - label_w - value_w
    height = row_h * len(points) + 6
    x_max = max(1, *(value for _, value in points))
    parts = [_svg_open(width, height, title)]
    for i, (label, value) in enumerate(points):
        y = 3 + i * row_h
        w = plot_w * value / x_max
        shown = label if len(label) <= 44 else label[:43] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + row_h * 0.65:.1f}" text-anchor="end" font-size="12">{escape(shown)}</text>')
        key = f' data-key="{_attr(keys[i])}"' if keys is not None else ""
        parts.append(
            f'<rect class="point" data-label="{_attr(label)}"{key} data-value="{value}" x="{label_w}" y="{y + 2}" '
            f'width="{w:.1f}" height="{row_h - 6}" fill="{BAR}"><title>{escape(label)}: {value}</title></rect>'
        )
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + row_h * 0.65:.1f}" font-size="12">{value}</text>')
    parts.append("</svg>")
    return f'<figure id="{_attr(chart_id)}" class="chart"><figcaption>{escape(title)}</figcaption>{"".join(parts)}</figure>'
