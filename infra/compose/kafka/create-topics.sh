#!/usr/bin/env bash
# One-shot (compose service kafka-init): creates the pipeline's topics before any service starts,
# so consumers find them at once (auto.create.topics.enable is false). Idempotent: existing
# topics are left as they are. The bridge would create the same topics with the same settings;
# doing it here first gives a deterministic start. Names and sizes are the bridge's variables,
# with the bridge's defaults (tests/unit/deploy checks that they agree with BridgeSettings).
set -euo pipefail
umask 077
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${BROKER_ADMIN_PASSWORD:?}";
PROPS
bootstrap="${BOOTSTRAP_SERVERS:?}"
rf="${BRIDGE_REPLICATION_FACTOR:-3}"

create() {  # name partitions [--config k=v ...]
  local name="$1" partitions="$2"
  shift 2
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$bootstrap" --command-config "$conf" \
    --create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor "$rf" "$@"
}

create "${BRIDGE_LOCAL_TOPIC:-processed_product_view_test}" "${BRIDGE_LOCAL_PARTITIONS:-6}"
create "${BRIDGE_DLQ_TOPIC:-processed_product_view_test.dlq}" "${BRIDGE_DLQ_PARTITIONS:-3}"
create "${BRIDGE_OFFSETS_TOPIC:-processed_product_view_test.bridge-offsets}" "${BRIDGE_OFFSETS_PARTITIONS:-1}" \
  --config cleanup.policy=compact --config segment.bytes=16777216
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$bootstrap" --command-config "$conf" --list
