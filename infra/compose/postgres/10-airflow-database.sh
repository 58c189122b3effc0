#!/usr/bin/env bash
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): Airflow's metadata database
# and its owner, beside the warehouse database (POSTGRES_DB) that the ETL writes.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set airflow_password="${AIRFLOW_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SQL
