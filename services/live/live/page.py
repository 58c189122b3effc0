"""The analytics page: HTML assembled server-side from the same models the JSON API returns.

Pure. The page needs nothing but itself: inline CSS, inline SVG charts (:mod:`live.charts`) and
one inline script (``static/page.js``). Two timers refresh the two sections with the page's own
query string (so the filters stay): the live section every ``refresh_s`` seconds from the JSON of
``/api/live`` (the script draws the same markup as :func:`live_section`), the star section every
``star_refresh_s`` from ``/partials/star`` (the server's rendering of exactly what
``/api/star/top`` and ``/api/star/views`` answer for the same parameters); a third, at the live
section's period, redraws the star schema's freshness line from ``/api/star/freshness``. No
request leaves the page's own origin (no CDN, no fonts, no images).

Element ids (what a test or a script reads): ``live-minutes``, ``live-hours``,
``live-top-{minutes}``; ``star-days``, ``star-products``, ``star-countries``, ``star-media``,
``star-devices``; ``star-filters`` (the form), ``star-range`` (the range shown), ``etl-runs``;
``star-freshness`` (next to the star section's header: "star schema as of …, N s behind" from the
ETL API's continuous mode, :mod:`live.freshness`; the live timer refreshes it from
``/api/star/freshness``; absent when ``LIVE_ETL_API_URL`` is empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from live.charts import bar_chart, column_chart
from live.freshness import StarFreshness
from live.models import LiveSnapshot, StarTop
from live.star import Dimension
from live.star_api import StarSection

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1560px}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(740px,1fr));gap:.6rem 1.2rem}
figure{margin:0} figcaption{font-weight:600;margin:.3rem 0} .empty{color:#777;font-style:italic}
.muted{color:#666;font-size:.85rem} table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
form{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:end;margin:.4rem 0 .8rem;font-size:.9rem}
form label{display:flex;flex-direction:column} .error{color:#c62828} h2 .muted{font-weight:normal;margin-left:.6rem}
.status-succeeded{color:#1a7f37}.status-failed{color:#c62828}.status-running,.status-queued{color:#b26a00}
"""

# The page's one script (live.static/page.js), inlined: no second request, nothing from elsewhere.
SCRIPT = (Path(__file__).parent / "static" / "page.js").read_text(encoding="utf-8")

CHART_TITLES: dict[Dimension, tuple[str, str]] = {
    "product": ("star-products", "Top products"),
    "country": ("star-countries", "Views per country"),
    "medium": ("star-media", "Views per referrer medium"),
    "device": ("star-devices", "Views per device type"),
}


def _hhmm(iso_time: str) -> str:
    return iso_time[11:16]


def product_label(product_id: str, name: str | None) -> str:
    """What a product bar says: its name with the id next to it (the id alone when unnamed)."""
    return f"{name} ({product_id})" if name and name != product_id else product_id


def live_section(live: LiveSnapshot) -> str:
    """The part of the page the first timer refreshes: views per minute and hour, top products."""
    minutes = [(m.window_start, m.views) for m in live.views_per_minute]
    hours = [(h.window_start, h.views) for h in live.views_per_hour]
    parts = [
        f'<p class="muted">event time, {live.window_s}-second windows up to {escape(live.until)}; '
        f"{live.events_seen} events consumed, {live.views_counted} views counted by this replica; "
        f"windows older than {live.retention_s // 60} minutes (wall clock) are dropped</p>",
        '<div class="grid">',
        column_chart("live-minutes", "Views per minute (UTC)", minutes, tick=_hhmm),
        column_chart("live-hours", "Views per hour (UTC, within the retention)", hours, tick=_hhmm),
    ]
    for top in live.top:
        points = [(product_label(p.product_id, p.name), p.views) for p in top.products]
        keys = [p.product_id for p in top.products]
        parts.append(bar_chart(f"live-top-{top.span_minutes}", f"Top products, last {top.span_minutes} minutes", points, keys=keys))
    parts.append("</div>")
    return "".join(parts)


def _top_chart(top: StarTop | None, dimension: Dimension) -> str:
    chart_id, title = CHART_TITLES[dimension]
    items = top.items if top else []
    if dimension == "product":
        points = [(product_label(i.key, i.name), i.views) for i in items]
        return bar_chart(chart_id, title, points, keys=[i.key for i in items])
    return bar_chart(chart_id, title, [(i.name, i.views) for i in items], keys=[i.key for i in items])


def _runs_table(runs: Sequence[Mapping[str, Any]] | None) -> str:
    if runs is None:
        return '<p class="muted" id="etl-runs">etl_runs is not readable by the page\'s database role</p>'
    if not runs:
        return '<p class="empty" id="etl-runs">no data yet</p>'
    columns = list(runs[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for run in runs:
        cells = []
        for c in columns:
            value = "" if run[c] is None else str(run[c])
            css = f' class="status-{escape(value, quote=True)}"' if c == "status" else ""
            cells.append(f"<td{css}>{escape(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="etl-runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _range_note(star: StarSection) -> str:
    if star.error:
        return f'<p class="muted error" id="star-range">star schema: {escape(star.error)}</p>'
    req = star.request
    if req is None or req.filter is None:
        return '<p class="muted" id="star-range">no data yet: the ETL has not loaded any fact</p>'
    f, data = req.filter, req.data
    shown = [f"{f.date_from} to {f.date_to}"]
    shown += [f"country {escape(req.country)}"] if req.country else []
    shown += [f"device {escape(req.device)}"] if req.device else []
    return (
        f'<p class="muted" id="star-range" data-from="{f.date_from}" data-to="{f.date_to}">{", ".join(shown)}; '
        f"facts from {data.first} to {data.last}"
        + (f", last loaded {data.loaded_at:%Y-%m-%d %H:%M} UTC" if data.loaded_at else "")
        + "</p>"
    )


def star_section_html(star: StarSection) -> str:
    """The part of the page the second timer refreshes: the range, the breakdowns, the ETL runs."""
    days = [(p.day.isoformat(), p.views) for p in star.views.points] if star.views else []
    return (
        _range_note(star)
        + '<div class="grid">'
        + column_chart("star-days", "Views per day", days, tick=lambda day: day[5:])
        + "".join(_top_chart(star.top.get(d), d) for d in CHART_TITLES)
        + "</div><h2>Recent ETL runs</h2>"
        + _runs_table(star.runs)
    )


def freshness_html(freshness: StarFreshness | None) -> str:
    """The ``star-freshness`` element (empty when the ETL API is not configured); its data
    attributes carry the numbers, its title the worker's whole reason."""
    if freshness is None or freshness.status == "disabled":
        return ""
    data = freshness.model_dump(mode="json")  # the values /api/star/freshness answers (the script sets the same)
    attrs = f' data-status="{freshness.status}"'
    if data["behind_seconds"] is not None:
        attrs += f' data-behind-seconds="{data["behind_seconds"]}"'
    if data["star_as_of"] is not None:
        attrs += f' data-as-of="{escape(data["star_as_of"], quote=True)}"'
    if freshness.reason:
        attrs += f' title="{escape(freshness.reason, quote=True)}"'
    css = "muted error" if freshness.status in ("unreachable", "not_running") else "muted"
    return f' <span class="{css}" id="star-freshness"{attrs}>{escape(freshness.text)}</span>'


def _select(name: str, label: str, values: Sequence[str], chosen: str | None) -> str:
    options = ['<option value="">all</option>']
    for v in values:
        selected = " selected" if v == chosen else ""
        options.append(f'<option value="{escape(v, quote=True)}"{selected}>{escape(v)}</option>')
    return f'<label>{escape(label)}<select name="{name}">{"".join(options)}</select></label>'


def filter_form(star: StarSection) -> str:
    """GET form on the page itself: the chosen range and filters end up in the query string."""
    req = star.request
    f = req.filter if req else None
    countries = req.data.countries if req else []
    devices = req.data.devices if req else []
    lo, hi = (f.date_from.isoformat(), f.date_to.isoformat()) if f else ("", "")
    bounds = f' min="{req.data.first}" max="{req.data.last}"' if req and req.data.first else ""
    return (
        '<form id="star-filters" method="get" action="/">'
        f'<label>from<input type="date" name="from" value="{lo}"{bounds}></label>'
        f'<label>to<input type="date" name="to" value="{hi}"{bounds}></label>'
        + _select("country", "country", countries, req.country if req else None)
        + _select("device", "device type", devices, req.device if req else None)
        + '<button type="submit">Apply</button> <a href="/">reset</a></form>'
    )


def render_page(
    live: LiveSnapshot | str,
    star: StarSection,
    *,
    refresh_s: int,
    star_refresh_s: int,
    title: str = "Product views",
    freshness: StarFreshness | None = None,
    dead_letters: str = "",
) -> str:
    """The whole page; ``live`` as a string: why the counters cannot answer yet (the live timer
    replaces it as soon as they can); ``freshness``: the star schema's, beside its header;
    ``dead_letters``: the panel's HTML (live.deadletters), refreshed with the page."""
    live_html = live_section(live) if isinstance(live, LiveSnapshot) else f'<p class="empty">{escape(live)}</p>'
    return (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body data-live-every="{int(refresh_s)}" data-star-every="{int(star_refresh_s)}">'
        f"<h1>{escape(title)}</h1>"
        '<p class="muted">JSON behind every chart: <a href="/docs">/docs</a> (/api/live, /api/star/top, /api/star/views, '
        "/api/star/range, /api/star/runs, /api/star/freshness)</p>"
        f"<h2>Live (faust counters, refreshed every {refresh_s} s)</h2>"
        f'<section id="live">{live_html}</section>'
        f"<h2>Star schema (ETL, refreshed every {star_refresh_s} s){freshness_html(freshness)}</h2>"
        + filter_form(star)
        + f'<section id="star-body">{star_section_html(star)}</section>'
        + (f"<h2>Dead letters (last 24 hours)</h2>{dead_letters}" if dead_letters else "")
        + f"<script>{SCRIPT}</script></body></html>"
    )
