"""What the soak watches while it runs: each fault's recovery, the services' RSS over time, and
which alerts Prometheus raised for which fault.

Recovery of a fault, from its :class:`~bench.soak.faults.FaultRecord`:

- ``restart_ready_s``: a service the fault restarted, from its start to its ``/ready`` (the
  issue's "every restart ready within 30 s"), timed by the fault itself from the restart
  (:func:`bench.soak.faults.time_restart`; a double's slowest half);
- ``ready_at``: after the heal, when every primary service answers ``/ready`` again;
  ``waited_for``: the services (and their reasons) still not ready at the last poll before that,
  i.e. what the "ready again" time waited for;
- ``recovered_at``: when, besides, the bridge's and the sink's lag are back under the bound (two
  seconds of traffic: under steady traffic a lag of exactly 0 is a moment between two fetches,
  not a state).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak.faults import FaultRecord
from bench.soak.services import Pipeline, rss_mib

RECOVERY_TIMEOUT_S = 600.0


async def not_ready(pipeline: Pipeline, client: httpx.AsyncClient) -> dict[str, str]:
    """Each primary service that is not ready, with its reason (empty: all ready)."""
    services = pipeline.primary()
    reasons = await asyncio.gather(*(s.not_ready(client) for s in services))
    return {s.label: r for s, r in zip(services, reasons, strict=True) if r is not None}


async def all_ready(pipeline: Pipeline, client: httpx.AsyncClient) -> bool:
    return not await not_ready(pipeline, client)


async def lags(pipeline: Pipeline, client: httpx.AsyncClient) -> tuple[int | None, int | None]:
    bridge, sink = await asyncio.gather(pipeline.services["bridge"].lag(client), pipeline.services["sink"].lag(client))
    return bridge, sink


async def follow_recovery(pipeline: Pipeline, record: FaultRecord, lag_bound: int) -> None:
    """Fills ``record``'s ready and recovered times (polls every 0.5 s, gives up after
    :data:`RECOVERY_TIMEOUT_S`: the report then shows them as missing)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            restarting = record.restart_watch is not None and not record.restart_watch.done()
            if record.ready_at is None and not restarting:
                waiting = await not_ready(pipeline, client)
                if waiting:
                    record.waited_for = waiting
                else:
                    record.ready_at = time.time()
            if record.ready_at is not None:
                bridge, sink = await lags(pipeline, client)
                if bridge is not None and sink is not None and bridge <= lag_bound and sink <= lag_bound:
                    record.recovered_at = time.time()
                    return
            await asyncio.sleep(0.5)


@dataclass
class RssSampler:
    """Every ``every_s``: the RSS (MiB) of each service process and of the continuous worker, and
    how far behind each hop is (bridge and sink lag in records, the star schema in seconds)."""

    pipeline: Pipeline
    every_s: float = 10.0
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    behind: list[tuple[float, dict[str, float | None]]] = field(default_factory=list)

    async def run(self, halt: asyncio.Event) -> None:
        async with self.pipeline.client() as client:
            while not halt.is_set():
                row: dict[str, float] = {}
                for svc in self.pipeline.primary():
                    value = rss_mib(svc.pid)
                    if value is not None:
                        row[svc.name] = value
                try:
                    status = await self.pipeline.continuous(client)
                except (httpx.HTTPError, ValueError):
                    status = {}
                value = rss_mib(status.get("pid"))
                if value is not None:
                    row["etl-worker"] = value
                now = time.time()
                bridge, sink = await lags(self.pipeline, client)
                self.samples.append((now, row))
                self.behind.append(
                    (
                        now,
                        {"bridge_lag_records": bridge, "sink_lag_records": sink, "star_behind_seconds": status.get("behind_seconds")},
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), self.every_s)

    def behind_by_minute(self, started_at: float) -> list[dict[str, Any]]:
        """Per minute since ``started_at``: the largest bridge lag, sink lag and star delay seen."""
        minutes: dict[int, dict[str, Any]] = {}
        for t, row in self.behind:
            m = minutes.setdefault(int((t - started_at) // 60), {"minute": int((t - started_at) // 60)})
            for key, value in row.items():
                if value is not None:
                    m[key] = max(m.get(key, value), value)
        return [minutes[k] for k in sorted(minutes)]

    def rss_by_minute(self, started_at: float) -> list[dict[str, Any]]:
        """Per minute since ``started_at``: the largest RSS (MiB) of each process, to read beside
        :meth:`behind_by_minute` (a consumer's buffers follow its backlog)."""
        minutes: dict[int, dict[str, Any]] = {}
        for t, row in self.samples:
            m = minutes.setdefault(int((t - started_at) // 60), {"minute": int((t - started_at) // 60)})
            for key, value in row.items():
                m[key] = max(m.get(key, value), round(value, 1))
        return [minutes[k] for k in sorted(minutes)]

    def summary(self, window_s: float, warmup_s: float = 0.0, rest_lag: float | None = None) -> dict[str, dict[str, float | None]]:
        """Per process: the mean RSS over the first ``window_s`` seconds after ``warmup_s`` and over
        the last ``window_s`` seconds, and the largest RSS seen.

        ``warmup_s``: the time a process's state legitimately fills (live's counters grow until
        its retention, then old windows drop). ``rest_lag``: the bridge and the sink count only
        samples taken while their lag was at most that many records, because a consumer's
        buffers follow its backlog (HISTORY, 2026-12-06 23:25: the bridge's fetch buffers, not
        time or restarts); a window with no such sample has no mean."""
        if not self.samples:
            return {}
        t_first, t_last = self.samples[0][0], self.samples[-1][0]
        begin = t_first + warmup_s
        lag_at = {t: row for t, row in self.behind}
        names = sorted({n for _, row in self.samples for n in row})
        out: dict[str, dict[str, float | None]] = {}
        for name in names:
            lag_key = HOP_LAGS.get(name)

            def at_rest(t: float, lag_key: str | None = lag_key) -> bool:
                if rest_lag is None or lag_key is None:
                    return True
                lag = lag_at.get(t, {}).get(lag_key)
                return lag is not None and lag <= rest_lag

            kept = [(t, row[name]) for t, row in self.samples if name in row and at_rest(t)]
            first = [v for t, v in kept if begin <= t <= begin + window_s]
            last = [v for t, v in kept if t >= t_last - window_s]
            start = sum(first) / len(first) if first else None
            end = sum(last) / len(last) if last else None
            growth = None if not start or end is None else round(100 * (end - start) / start, 1)
            out[name] = {
                "start_mib": _r(start),
                "end_mib": _r(end),
                "growth_pct": growth,
                "max_mib": _r(max(row.get(name, 0.0) for _, row in self.samples)),
                "samples": float(len(first) + len(last)),
            }
        return out


# the lag (in ``RssSampler.behind``) that a process's buffers follow
HOP_LAGS = {"bridge": "bridge_lag_records", "sink": "sink_lag_records"}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def match_alerts(records: list[FaultRecord], intervals: dict[Any, list[list[float | None]]], grace_s: float) -> None:
    """For each fault's expected (alert, job): the first firing interval of that alert (and job)
    that began after the fault was injected and before ``grace_s`` after its heal."""
    for record in records:
        record.alerts = []
        for alert, job in record.expected_alerts:
            found: dict[str, Any] = {"alert": alert, "job": job, "fired": False, "resolved": False}
            latest = (record.healed_at or record.injected_at) + grace_s
            for (name, labels), spans in intervals.items():
                if name != alert or (job is not None and dict(labels).get("job") != job):
                    continue
                for fired, resolved in spans:
                    if fired is not None and record.injected_at <= fired <= latest:
                        found |= {
                            "fired": True,
                            "fired_after_s": round(fired - record.injected_at, 1),
                            "resolved": resolved is not None,
                            "resolved_after_heal_s": None
                            if resolved is None or record.healed_at is None
                            else round(resolved - record.healed_at, 1),
                        }
                        break
                if found["fired"]:
                    break
            record.alerts.append(found)
