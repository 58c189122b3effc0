"""LOG_FORMAT=json on a real ``python -m sink``: every line is one JSON object, and the line about a
record the store refused names its stage and exact coordinates (what an operator filters on)."""

from __future__ import annotations

import json

import pytest
from eventgen.samples import bridged_events as make_events

from shared.dlq import read_dead_letter_headers
from shared.kafka import KafkaConnection
from tests.integration.sink.conftest import SinkNames
from tests.integration.sink.helpers import encode, produce, read_topic, wait_until
from tests.integration.sink.test_sink_refusals import StartSink, wait_caught_up

FIXED = ["ts", "level", "logger", "message", "service"]


@pytest.mark.timeout(240)
async def test_a_refused_record_is_logged_as_json_with_its_coordinates(
    names: SinkNames, local_kafka: KafkaConnection, sinks: StartSink
) -> None:
    events = make_events(60, seed=19)
    events[20] = dict(events[20], key_search="bague\x00fiançailles")  # FerretDB on PostgreSQL refuses a NUL
    sink = sinks("sink", {**names.env(SINK_MAX_BATCH_EVENTS="100"), "LOG_FORMAT": "json"})
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    await produce(local_kafka, names.topic, encode(events))
    await wait_caught_up(sink, 150)
    (dead,) = await read_topic(local_kafka, names.dlq, expected=1)
    h = read_dead_letter_headers(dead.headers)
    rc, _ = sink.terminate()
    assert rc == 0

    records = [json.loads(line) for line in sink.log_path.read_text().splitlines()]  # every line is JSON
    for rec in records:
        assert list(rec)[:5] == FIXED, rec
        assert (rec["service"], rec["hop"]) == ("sink", "sink"), rec
    refused = [r for r in records if r["message"].startswith("mongodb refused ")]
    assert len(refused) == 1, refused
    assert {k: v for k, v in refused[0].items() if k not in ("ts", "message")} == {
        "level": "WARNING",
        "logger": "sink.app",
        "service": "sink",
        "stage": "sink.write",
        "count": 1,
        "offsets": [f"{h['dlq.source.topic']}:{h['dlq.source.partition']}:{h['dlq.source.offset']}"],
        "hop": "sink",
    }
    assigned = [r for r in records if r["message"].startswith("partitions assigned: ")]
    assert assigned and assigned[0]["partitions"] == assigned[0]["message"].removeprefix("partitions assigned: ").split(",")
    assert all(p.startswith(f"{names.topic}:") for p in assigned[0]["partitions"])
