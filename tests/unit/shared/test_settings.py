"""shared.settings: the fields the services share are read under each service's own prefix."""

from __future__ import annotations

import pytest
from bridge.settings import BridgeSettings
from live.settings import LiveSettings
from sink.settings import SinkSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("LOCAL_KAFKA_", "REMOTE_KAFKA_", "BRIDGE_", "SINK_", "LIVE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOCAL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REMOTE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:2")


def test_each_service_keeps_its_defaults() -> None:
    bridge, sink, live = BridgeSettings(), SinkSettings(), LiveSettings()
    assert (bridge.http_port, bridge.shutdown_timeout_s, bridge.backoff_initial_s, bridge.backoff_max_s) == (8101, 8.0, 0.5, 15.0)
    assert (sink.http_port, sink.shutdown_timeout_s, sink.backoff_initial_s, sink.backoff_max_s) == (8102, 9.5, 0.2, 5.0)
    assert (live.http_port, live.shutdown_timeout_s, live.backoff_initial_s, live.backoff_max_s) == (8104, 15.0, 0.5, 15.0)
    for s in (bridge, sink, live):
        assert (s.http_host, s.log_level, s.local_kafka.bootstrap_servers) == ("0.0.0.0", "INFO", "127.0.0.1:1")
    assert (
        bridge.consumer_options()
        == sink.consumer_options()
        == {
            "fetch_max_bytes": 52_428_800,
            "max_partition_fetch_bytes": 4_194_304,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "metadata_max_age_ms": 10_000,
        }
    )


def test_inherited_fields_are_read_under_the_services_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_HTTP_PORT", "9001")
    monkeypatch.setenv("SINK_FETCH_MAX_BYTES", "1024")
    monkeypatch.setenv("LIVE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("HTTP_PORT", "1")  # no prefix: nobody's
    assert BridgeSettings().http_port == 9001 and SinkSettings().http_port == 8102
    assert SinkSettings().consumer_options()["fetch_max_bytes"] == 1024 and BridgeSettings().fetch_max_bytes == 52_428_800
    assert LiveSettings().log_level == "DEBUG" and SinkSettings().log_level == "INFO"
