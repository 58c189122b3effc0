"""A real Prometheus (Debian's 2.42 binary, infra.prometheus.PrometheusServer) scraping a real sink
with the project's own scrape config and alert rules, the rules at a time scale where
``PipelineServiceDown`` (``for: 2m``) fires after 6 s: the sink is scraped, killed -9 (the alert
fires, with the compose job's labels), restarted (it resolves), and ``ALERTS`` read back over
``query_range`` holds that one outage as one interval with both ends.

The prometheus binary comes with Debian's ``prometheus`` package, which ``./pipeline setup``
installs; without it this test fails, it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from infra.prometheus import PrometheusServer
from shared.kafka import KafkaConnection
from tests.integration.sink.helpers import SinkProcess, create_topic, delete_topics, drop_collection, sink_env, wait_until
from tests.support.processes import free_port

TIME_SCALE = 0.05  # for: 2m → 6 s
DOWN_FOR_S = 120 * TIME_SCALE


def sink_down_alerts(alerts: list[dict[str, Any]], instance: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("alertname") == "PipelineServiceDown" and a["labels"].get("instance") == instance]


@pytest.mark.timeout(180)
async def test_prometheus_fires_and_resolves_pipeline_service_down_for_a_killed_sink(
    local_kafka: KafkaConnection, mongodb_uri: str, unique_name: str, tmp_path: Path
) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run ./pipeline setup (it installs Debian's prometheus package)")
    topic, dlq = unique_name, f"{unique_name}.dlq"
    await create_topic(local_kafka, topic)
    sink = SinkProcess("sink-prometheus", sink_env(topic, f"{unique_name}.sink", unique_name, dlq), tmp_path).start()
    instance = f"127.0.0.1:{sink.port}"
    prom = PrometheusServer(
        tmp_path / "prometheus", {"sink": [instance]}, port=free_port(), time_scale=TIME_SCALE, scrape_interval_s=1, evaluation_interval_s=1
    )
    try:
        await wait_until("the sink ready", lambda: sink.get("/ready")[0] == 200, 90)
        began = time.time()
        prom.start()

        # scraped under the compose job name, its own metrics included
        def up() -> list[float]:
            return [float(s["value"][1]) for s in prom.query(f'up{{job="sink", instance="{instance}"}}')]

        await wait_until("the sink scraped", lambda: up() == [1.0], 30)
        written = prom.query('sink_written_documents_total{job="sink"}')
        assert [s["metric"]["instance"] for s in written] == [instance], written
        assert [float(s["value"][1]) for s in prom.query('pipeline_service_ready{job="sink"}')] == [1.0]
        assert sink_down_alerts(prom.alerts(), instance) == []

        killed = time.time()
        sink.kill()
        fired = await wait_until("PipelineServiceDown firing", lambda: sink_down_alerts(prom.alerts_firing(), instance), 30, 0.5)
        fired_after = time.time() - killed
        assert fired[0]["labels"] == {"alertname": "PipelineServiceDown", "job": "sink", "instance": instance, "severity": "critical"}
        assert fired[0]["annotations"]["summary"] == f"sink {instance} does not answer /metrics"
        assert fired_after >= DOWN_FOR_S, f"fired {fired_after:.1f}s after the kill, before its for: of {DOWN_FOR_S}s"

        sink.start()
        await wait_until("PipelineServiceDown resolved", lambda: not sink_down_alerts(prom.alerts(), instance), 60, 0.5)
        assert up() == [1.0]
        await wait_until("the restarted sink ready", lambda: sink.get("/ready")[0] == 200, 90)

        # the last firing sample is at most a step before the resolving evaluation: let a step pass
        await asyncio.sleep(2)
        end = time.time()
        intervals = prom.alert_intervals(began, end, step=1)
        ours = {k: v for k, v in intervals.items() if k[0] == "PipelineServiceDown" and ("instance", instance) in k[1]}
        assert list(ours) == [("PipelineServiceDown", (("instance", instance), ("job", "sink"), ("severity", "critical")))], intervals
        [spans] = ours.values()
        assert len(spans) == 1, spans
        fired_at, resolved_at = spans[0]
        assert resolved_at is not None, spans
        assert killed + DOWN_FOR_S - 1 <= fired_at < resolved_at <= end, (killed, spans, end)
        print(f"fired {fired_after:.1f}s after the kill; interval {resolved_at - fired_at:.0f}s")
    except Exception:
        print(f"--- prometheus log ---\n{prom.tail()}\n--- sink log ---\n{sink.log_tail()}")
        raise
    finally:
        prom.stop()
        with contextlib.suppress(Exception):
            sink.stop_quietly()
        with contextlib.suppress(Exception):
            await drop_collection(mongodb_uri, unique_name)
        with contextlib.suppress(Exception):
            await delete_topics(local_kafka, [topic, dlq])
