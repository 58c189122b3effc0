#!/usr/bin/env bash
# Healthcheck of one broker: a SASL/PLAIN login on its client listener is accepted and the
# cluster answers (cluster id from the metadata). The admin password comes from the container
# environment (BROKER_ADMIN_PASSWORD); it is written to a private temp file, never to a command line.
set -euo pipefail
umask 077
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT
cat >"$conf" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${BROKER_ADMIN_PASSWORD:?}";
PROPS
/opt/kafka/bin/kafka-cluster.sh cluster-id --bootstrap-server localhost:9092 --config "$conf" >/dev/null
