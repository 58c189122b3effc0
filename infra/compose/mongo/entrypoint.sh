#!/usr/bin/env bash
# MongoDB as a single-node replica set with authentication: members of a replica set with auth
# need a shared key file. One node, so the key is generated once into the config volume and
# kept there. Then the image's own entrypoint runs (it creates the root user and runs
# /docker-entrypoint-initdb.d on an empty volume, without --replSet/--keyFile).
set -euo pipefail
key=/data/configdb/replica-set.key
if [[ ! -s "$key" ]]; then
  umask 077
  head -c 756 /dev/urandom | base64 -w0 >"$key"
fi
chown mongodb:mongodb "$key"
chmod 400 "$key"
exec docker-entrypoint.sh "$@"
