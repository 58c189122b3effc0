"""The bridge's one settings class: its own knobs under ``BRIDGE_``, connections shared."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, Field
from pydantic_settings import SettingsConfigDict

from shared.dlq import DEFAULT_MAX_REQUEST_BYTES
from shared.event import EVENT_TIME_FLOOR, EVENT_TIME_MAX_AHEAD_S
from shared.kafka import KafkaConnection
from shared.settings import ConsumerSettings, remote_kafka_from_env

if TYPE_CHECKING:
    from bridge.event_times import EventRules


class BridgeSettings(ConsumerSettings):
    """Inherited (shared.settings): the local cluster, the remote consumer's tuning, backoff,
    HTTP, log level and shutdown timeout."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore")

    remote_kafka: KafkaConnection = Field(default_factory=remote_kafka_from_env, exclude=True)

    # Topics and names (the seed's names as defaults).
    remote_topic: str = "product_views"
    local_topic: str = "processed_product_view_test"
    dlq_topic: str = "processed_product_view_test.dlq"
    # Compacted: key = remote "topic/partition", value = the next remote offset to copy.
    offsets_topic: str = "processed_product_view_test.bridge-offsets"
    group_id: str = "bridge"
    # transactional.id = "{prefix}.{remote topic}.{partition}"; defaults to the group id.
    transactional_id_prefix: str = ""
    # Where to start a remote partition that has no stored offset yet.
    start_from: Literal["earliest", "latest"] = "earliest"
    # A stored position outside the remote log (topic recreated, retention passed it) is an
    # incident (bridge.incidents): "fail" stops copying that partition and reports not-ready
    # until an operator restarts with a resume policy, which moves the position to the log's
    # start or end (recorded in the offsets topic, new source_epoch).
    source_reset_policy: Literal["fail", "resume_from_earliest", "resume_from_latest"] = "fail"

    # Topics the bridge creates when missing.
    local_partitions: int = 6
    dlq_partitions: int = 3
    offsets_partitions: int = 1
    replication_factor: int = 3

    # Which local partition a copied event goes to: "key" hashes its key (the visitor, as Kafka's
    # Java client would), so one visitor's events share a local partition; "source" keeps the
    # remote partition (remote partition mod the local count, as MirrorMaker 2 keeps partitions),
    # so each transaction writes one local partition instead of all of them (README: Latency).
    local_partitioning: Literal["key", "source"] = "key"

    # Batching and clients.
    max_batch_records: int = 2000  # per fetch and per transaction
    max_pending_records: int = 8000  # fetched but not yet copied, per partition: beyond, the partition pauses
    poll_timeout_ms: int = 200
    linger_ms: int = 5
    max_batch_bytes: int = 1_048_576  # one record batch per local partition and transaction, typically
    # The largest request to the local brokers; an event's key and value may take this minus the
    # dead-letter headroom (shared.dlq.HEADROOM_BYTES), larger ones are dead-lettered.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    transaction_timeout_ms: int = 60_000
    # Seconds to wait for a producer's init_transactions (fencing the previous owner).
    init_timeout_s: float = 30.0
    # A transaction (sends and commit) not ended after this many seconds ends the session
    # (not-ready, backoff, restart from the stored offsets): the local cluster is unreachable.
    transaction_deadline_s: float = 20.0
    # Seconds a producer may take to flush and close before it is closed anyway.
    close_timeout_s: float = 5.0
    # Begin and produce the next transaction while the previous one commits (on the
    # partition's next producer). A transaction cannot begin on the same producer before the
    # coordinator has written the previous one's markers; pipelining hides that wait.
    pipeline_transactions: bool = True
    # Transactional producers per owned partition, all fenced on take-over; pipelined
    # transactions take them in turn. With 2 a producer begins again right after its commit
    # returned, while the coordinator still writes that commit's markers (AddPartitionsToTxn is
    # refused with CONCURRENT_TRANSACTIONS until then); with 3 it has a whole transaction's time.
    # Every replica of a group must fence the same ids: change it with the whole group stopped.
    transactional_slots: int = Field(default=3, ge=2, le=8)
    # How often remote end offsets are read for the lag gauges (and the remote group committed).
    lag_interval_s: float = 2.0

    # Plausible event times: an event time before the floor, or more than max_ahead_s seconds
    # after the record is bridged, is refused (dead letter ImplausibleEventTime).
    event_time_floor: AwareDatetime = datetime.fromisoformat(EVENT_TIME_FLOOR)
    event_time_max_ahead_s: float = Field(default=EVENT_TIME_MAX_AHEAD_S, ge=0, le=100 * 365 * 86_400)

    # Service (the other fields are inherited).
    http_port: int = 8101
    shutdown_timeout_s: float = 8.0

    def event_rules(self) -> EventRules:
        from bridge.event_times import EventRules

        return EventRules(event_time_floor=self.event_time_floor, event_time_max_ahead_s=self.event_time_max_ahead_s)

    def transactional_id(self, partition: int, slot: int = 0) -> str:
        """An id that fences the previous owner of one remote partition (pre-KIP-447 pattern);
        each partition has ``transactional_slots`` (slot 0, 1, …), all fenced on take-over."""
        base = f"{self.transactional_id_prefix or self.group_id}.{self.remote_topic}.{partition}"
        return base if slot == 0 else f"{base}.{slot}"
