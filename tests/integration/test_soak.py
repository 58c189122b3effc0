"""The short fault soak: ``bench.soak`` for 105 s at 200 events/s (bad records included), one
fault every 12 s from seven kinds that strike the soak's own processes and paths — kill -9 of
the bridge, the live service and the continuous ETL worker, SIGTERM of the sink, a second sink
joining and leaving, the sink's MongoDB connections reset and slowed — with a real Prometheus
evaluating the project's rules at 1/20 of their durations.

The same checker as the hour-long soak, computed from the generator's own manifest: every valid
event in MongoDB and in the local topic exactly once, every bad record dead-lettered once with
its reason, the star schema's views per date and product exact, both reconciliations ok; and
every fault recovered, every expected alert fired and resolved. Faults on the stack's shared
brokers and stores are left to the hour-long soak. It runs alone (exclusive) all the same: its
five processes, a Spark JVM and Prometheus on two cores starved the timing-bound tests beside it
(the first clean-clone run with it in parallel failed a job's heartbeat and a DLQ tool timeout).
"""

from __future__ import annotations

import pytest

from bench.soak.__main__ import passed
from bench.soak.faults import Timing
from bench.soak.report import as_json
from bench.soak.runner import Options, run_soak

KINDS = ("kill-bridge", "term-sink", "kill-live", "kill-etl-worker", "replica-sink", "proxy-reset", "proxy-slow")


@pytest.mark.exclusive
@pytest.mark.timeout(600)
async def test_short_soak_loses_nothing_and_every_expected_alert_fires() -> None:
    opts = Options(
        minutes=1.75,
        rate=200.0,
        fault_every_s=12.0,
        faults=len(KINDS),
        kinds=KINDS,
        seed=2028,
        bad_fraction=0.01,
        warmup_s=10.0,
        time_scale=0.05,
        timing=Timing(down_s=10.0, replica_s=5.0, slow_for_s=10.0),
        rss_growth_bound_pct=None,  # two minutes hold no two RSS windows; the hour-long soak checks it
    )
    data = as_json(await run_soak(opts))
    summary = {k: data[k] for k in ("lost", "duplicated", "star_exact", "reconciled", "alerts_expected", "alerts_fired", "alerts_resolved")}
    failed = [c for c in data["checks"] if not c["ok"]]
    assert failed == [], (summary, failed)
    assert data["faults"] == len(KINDS) and data["fault_kinds"] == len(KINDS) >= 5, data["fault_log"]
    assert data["lost"] == 0 and data["duplicated"] == 0 and data["star_exact"] and data["reconciled"], summary
    assert data["alerts_expected"] == 4 and data["alerts_fired"] == data["alerts_resolved"] == 4, data["fault_log"]
    assert passed(data), data
