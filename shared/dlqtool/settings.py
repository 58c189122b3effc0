"""The dead-letter tool's one settings class: its knobs under ``DLQ_``, the local cluster shared.

The topics fall back to the names the services are configured with (``SINK_DLQ_TOPIC``,
``BRIDGE_DLQ_TOPIC``; ``SINK_TOPIC``, ``BRIDGE_LOCAL_TOPIC``), so the tool run inside a service's
container reads and writes that service's topics without more configuration.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka import KafkaConnection
from shared.settings import local_kafka_from_env


class DlqToolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLQ_", extra="ignore")

    local_kafka: KafkaConnection = Field(default_factory=local_kafka_from_env, exclude=True)
    topic: str = Field(
        default="processed_product_view_test.dlq", validation_alias=AliasChoices("DLQ_TOPIC", "SINK_DLQ_TOPIC", "BRIDGE_DLQ_TOPIC")
    )
    # Where replayed records go: the local topic the bridge writes and the sink reads.
    local_topic: str = Field(
        default="processed_product_view_test", validation_alias=AliasChoices("DLQ_LOCAL_TOPIC", "SINK_TOPIC", "BRIDGE_LOCAL_TOPIC")
    )
    # The replay ledger (compacted; created when missing): "" → "{topic}.replays".
    ledger_topic: str = ""
    ledger_replication_factor: int = 3
    # A letter that went through this many replays already is parked (left where it is).
    max_replays: int = Field(default=3, ge=1)
    # One replay at a time: a second one with the same id fences the first (its open transaction
    # is aborted, so nothing of it is half visible).
    transactional_id: str = "dlq-replay"
    batch_records: int = Field(default=500, ge=1)  # letters per replay transaction
    timeout_s: float = 30.0  # reading a topic to its end, one transaction

    def ledger(self) -> str:
        return self.ledger_topic or f"{self.topic}.replays"
