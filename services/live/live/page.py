"""The analytics page: HTML assembled server-side from the live counters and the star schema.

Pure. The page needs nothing but itself: inline CSS, inline SVG charts (:mod:`live.charts`) and
a few lines of inline JavaScript that re-fetch the live section every ``refresh_s`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from live.charts import bar_chart, column_chart

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1560px}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(740px,1fr));gap:.6rem 1.2rem}
figure{margin:0} figcaption{font-weight:600;margin:.3rem 0} .empty{color:#777;font-style:italic}
.muted{color:#666;font-size:.85rem} table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
.status-succeeded{color:#1a7f37}.status-failed{color:#c62828}.status-running,.status-queued{color:#b26a00}
"""

SCRIPT = """
(function(){
  var el=document.getElementById('live'), every=%d*1000, n=0;
  function refresh(){
    fetch('/partials/live'+window.location.search,{cache:'no-store'})
      .then(function(r){if(!r.ok){throw new Error('HTTP '+r.status);}return r.text();})
      .then(function(t){el.innerHTML=t;n+=1;document.body.setAttribute('data-refreshes',String(n));})
      .catch(function(e){document.body.setAttribute('data-refresh-error',String(e));});
  }
  window.setInterval(refresh, every);
})();
"""


def _hhmm(iso_time: str) -> str:
    return iso_time[11:16]


def live_section(live: Mapping[str, Any]) -> str:
    """The part of the page the script refreshes: views per minute and the top products."""
    minutes = [(m["window_start"], m["views"]) for m in live["views_per_minute"]]
    parts = [
        f'<p class="muted">event time, {live["window_s"]}-second windows up to {escape(live["until"])}; '
        f"{live['events_seen']} events consumed, {live['views_counted']} views counted</p>",
        '<div class="grid">',
        column_chart("live-minutes", "Views per minute (UTC)", minutes, tick=_hhmm),
    ]
    for top in live["top"]:
        points = [(p["product_id"], p["views"]) for p in top["products"]]
        parts.append(bar_chart(f"live-top-{top['span_minutes']}", f"Top products, last {top['span_minutes']} minutes", points))
    parts.append("</div>")
    return "".join(parts)


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
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


def render_page(live: Mapping[str, Any], star: Mapping[str, Any], *, refresh_s: int, title: str = "Product views") -> str:
    breakdowns = {name: [(row["label"], row["views"]) for row in rows] for name, rows in star["breakdowns"].items()}
    star_note = f'<p class="muted">star schema: {escape(star["error"])}</p>' if star.get("error") else ""
    return (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        "<h2>Live (faust counters)</h2>"
        f'<section id="live">{live_section(live)}</section>'
        "<h2>Star schema (ETL)</h2>"
        f"{star_note}"
        '<div class="grid">'
        + column_chart("star-days", "Views per day", breakdowns["views_per_day"], tick=lambda day: day[5:])
        + bar_chart("star-countries", "Views per country", breakdowns["views_per_country"])
        + bar_chart("star-media", "Views per referrer medium", breakdowns["views_per_referrer_medium"])
        + bar_chart("star-devices", "Views per device type", breakdowns["views_per_device_type"])
        + "</div><h2>Recent ETL runs</h2>"
        + _runs_table(star["etl_runs"])
        + f"<script>{SCRIPT % refresh_s}</script></body></html>"
    )
