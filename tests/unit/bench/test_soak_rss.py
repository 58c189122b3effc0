"""The soak's RSS check compares like with like: windows after live's retention (its counters fill
until then) and, for the bridge and the sink, only samples taken while their lag was small (their
fetch buffers follow the backlog). The first hour soak compared an early window without a
backlog with a late one 590 000 records behind, and live's 2-hour windows still filling."""

from __future__ import annotations

from typing import Any

from bench.soak.runner import Options, rss_finding, rss_windows
from bench.soak.watch import RssSampler


def sampler(rows: list[tuple[float, dict[str, float], dict[str, float | None]]]) -> RssSampler:
    s = RssSampler(pipeline=None)  # type: ignore[arg-type]  # summary() reads only the samples
    s.samples = [(t, rss) for t, rss, _ in rows]
    s.behind = [(t, lag) for t, _, lag in rows]
    return s


def test_windows_start_after_the_warm_up_and_skip_a_hop_behind() -> None:
    rows: list[tuple[float, dict[str, float], dict[str, float | None]]] = []
    for t in range(0, 3600, 10):
        behind = 40 * 60 <= t < 50 * 60  # a backlog in the last part of the run
        rows.append(
            (
                float(t),
                {"bridge": 400.0 if behind else 150.0, "live": 100.0 if t < 1200 else 300.0, "etl-api": 60.0 + t / 3600},
                {"bridge_lag_records": 500_000 if behind else 100, "sink_lag_records": None},
            )
        )
    rows[-1][1]["bridge"] = 160.0  # after the backlog, a little higher
    out = sampler(rows).summary(window_s=600, warmup_s=1200, rest_lag=5000)
    # live: minutes 20-30 vs 50-60, both after its state filled
    assert (out["live"]["start_mib"], out["live"]["end_mib"], out["live"]["growth_pct"]) == (300.0, 300.0, 0.0)
    # bridge: the backlog's samples (minutes 40-50) count in neither window
    bridge = out["bridge"]
    assert bridge["start_mib"] == 150.0 and bridge["end_mib"] == round((150.0 * 59 + 160.0) / 60, 1)
    assert bridge["max_mib"] == 400.0
    assert out["etl-api"]["growth_pct"] is not None and 0 < out["etl-api"]["growth_pct"] < 1


def test_a_hop_never_caught_up_in_a_window_is_unmeasured_and_fails_the_check() -> None:
    rows = [(float(t), {"sink": 200.0}, {"sink_lag_records": 100 if t < 1800 else 90_000}) for t in range(0, 3600, 10)]
    out = sampler(rows).summary(window_s=600, warmup_s=0, rest_lag=5000)
    assert out["sink"]["end_mib"] is None and out["sink"]["growth_pct"] is None
    finding = rss_finding(out, 50.0)
    assert not finding.ok and finding.detail == {"grown": {}, "unmeasured": ["sink"]}


def test_the_finding_names_what_grew() -> None:
    rss: dict[str, Any] = {"live": {"growth_pct": 51.0}, "bridge": {"growth_pct": 10.0}}
    finding = rss_finding(rss, 50.0)
    assert not finding.ok and finding.detail == {"grown": {"live": 51.0}, "unmeasured": []}
    assert rss_finding({"bridge": {"growth_pct": 50.0}}, 50.0).ok


def test_windows_of_a_short_soak_start_at_once() -> None:
    assert rss_windows(Options(minutes=60, rate=1000)) == {"window_s": 600.0, "warmup_s": 1200.0, "rest_lag": 5000.0}
    assert rss_windows(Options(minutes=8, rate=200)) == {"window_s": 120.0, "warmup_s": 0.0, "rest_lag": 1000.0}
    assert rss_windows(Options(minutes=60, live_retention_s=None))["warmup_s"] == 0.0
