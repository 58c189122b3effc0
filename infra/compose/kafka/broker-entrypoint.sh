#!/usr/bin/env bash
# Entrypoint of a broker: writes the SASL/PLAIN users to a JAAS file, then runs the image's own
# start script (the command). The users cannot be KAFKA_* variables: the image turns those into
# server properties and silently drops every value that contains "=", as a JAAS config does.
# One KafkaServer section serves both SASL listeners: username/password is what this broker
# logs in with on the INTERNAL listener; user_<name> are the accepted users (admin and the
# services' user). Passwords are written into a quoted string: keep them free of " and \.
set -euo pipefail
umask 077
jaas=/tmp/kafka_server_jaas.conf
cat >"$jaas" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin"
  password="${BROKER_ADMIN_PASSWORD:?}"
  user_admin="${BROKER_ADMIN_PASSWORD:?}"
  user_${CLIENT_SASL_USERNAME:?}="${CLIENT_SASL_PASSWORD:?}";
};
JAAS
export KAFKA_OPTS="${KAFKA_OPTS:+$KAFKA_OPTS }-Djava.security.auth.login.config=$jaas"
exec "$@"
