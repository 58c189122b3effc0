"""The soak's output: ``soak.json`` (the issue's fields, per kind and per fault) and a Markdown
table of faults by kind."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from statistics import median
from typing import Any

from bench.soak.runner import Result


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"p50": round(median(values), 1) if values else None, "max": round(max(values), 1) if values else None}


def per_kind(result: Result) -> list[dict[str, Any]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for record in result.faults:
        kinds.setdefault(record.kind, []).append(record.as_dict())
    out = []
    for kind, rows in sorted(kinds.items()):
        alerts = [a for r in rows for a in r["alerts"]]
        out.append(
            {
                "kind": kind,
                "count": len(rows),
                "errors": [r["error"] for r in rows if r["error"]],
                "restart_ready_s": _stats([r["restart_ready_s"] for r in rows if r["restart_ready_s"] is not None]),
                "ready_s": _stats([r["ready_s"] for r in rows if r["ready_s"] is not None]),
                "recovered_s": _stats([r["recovered_s"] for r in rows if r["recovered_s"] is not None]),
                "not_recovered": sum(1 for r in rows if r["recovered_s"] is None),
                "alerts_expected": len(alerts),
                "alerts_fired": sum(1 for a in alerts if a["fired"]),
                "alerts_resolved": sum(1 for a in alerts if a["resolved"]),
            }
        )
    return out


def as_json(result: Result) -> dict[str, Any]:
    v = result.verdict
    kinds = per_kind(result)
    readies = [f.restart_ready_s for f in result.faults if f.restart_ready_s is not None]
    return {
        "minutes": result.options.minutes,
        "rate": result.options.rate,
        "seed": result.options.seed,
        "time_scale": result.options.time_scale,
        "produced": result.produced,
        "traffic_s": round(result.traffic_s, 1),
        "faults": len(result.faults),
        "fault_kinds": len(kinds),
        "lost": None if v is None else v.lost,
        "duplicated": None if v is None else v.duplicated,
        "star_exact": bool(v and v.star_exact),
        "reconciled": bool(v and v.reconciled),
        "checks_ok": bool(v and v.ok),
        "alerts_expected": sum(k["alerts_expected"] for k in kinds),
        "alerts_fired": sum(k["alerts_fired"] for k in kinds),
        "alerts_resolved": sum(k["alerts_resolved"] for k in kinds),
        "max_ready_s": round(max(readies), 1) if readies else None,
        "drained": result.drained,
        "drain_s": None if result.drain_s is None else round(result.drain_s, 1),
        "rss": result.rss,
        "per_kind": kinds,
        "checks": [] if v is None else [{"name": f.name, "ok": f.ok, **f.detail} for f in v.findings],
        "other_alerts": result.other_alerts,
        "fault_log": [f.as_dict() for f in result.faults],
        "behind_by_minute": result.behind,
        "rss_by_minute": result.rss_by_minute,
        "notes": result.notes,
        "unexpected_exits": result.unexpected_exits,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }


SLOW_READY_S = 30.0  # the bound for a service to be ready again


def table(data: dict[str, Any]) -> Iterator[str]:
    yield (
        "| fault kind | count | restart → ready p50 / max s | ready again p50 / max s | lag back p50 / max s "
        "| alerts fired / resolved / expected |"
    )
    yield "|---|---|---|---|---|---|"
    for k in data["per_kind"]:

        def pair(stats: dict[str, float | None]) -> str:
            return "—" if stats["p50"] is None else f"{stats['p50']} / {stats['max']}"

        yield (
            f"| {k['kind']} | {k['count']} | {pair(k['restart_ready_s'])} | {pair(k['ready_s'])} | {pair(k['recovered_s'])}"
            f"{' (' + str(k['not_recovered']) + ' not)' if k['not_recovered'] else ''} | "
            f"{k['alerts_fired']} / {k['alerts_resolved']} / {k['alerts_expected']} |"
        )
    yield ""
    yield (
        f"{data['faults']} faults of {data['fault_kinds']} kinds over {data['minutes']} min at {data['rate']:.0f} events/s "
        f"({data['produced']} produced): lost {data['lost']}, duplicated {data['duplicated']}, star exact {data['star_exact']}, "
        f"reconciled {data['reconciled']}, alerts fired {data['alerts_fired']}/{data['alerts_expected']} "
        f"(resolved {data['alerts_resolved']}), slowest restart to ready {data['max_ready_s']} s."
    )
    slow = [f for f in data["fault_log"] if f["ready_s"] is not None and f["ready_s"] > SLOW_READY_S and f.get("waited_for")]
    if slow:
        yield ""
        yield f"Ready again after more than {SLOW_READY_S:.0f} s, and what the last wait was for:"
        for f in slow:
            waited = "; ".join(f"{name}: {reason}" for name, reason in f["waited_for"].items())
            yield f"- fault {f['index'] + 1} ({f['kind']}, {f['target']}): {f['ready_s']} s, {waited}"
    for exit in data.get("unexpected_exits", []):
        yield f"- **{exit['process']} exited on its own** (code {exit['code']}) at {exit['at_s']} s, restarted: see soak.json"
    yield ""
    yield "| process | RSS first window MiB | RSS last window MiB | growth % | max MiB |"
    yield "|---|---|---|---|---|"
    for name, r in data["rss"].items():
        yield f"| {name} | {r['start_mib']} | {r['end_mib']} | {r['growth_pct']} | {r['max_mib']} |"
