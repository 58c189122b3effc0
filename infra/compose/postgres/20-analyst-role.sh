#!/usr/bin/env bash
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): the star schema's read-only
# role `analyst` (sql/009_roles.sql grants it SELECT on dim_*, fact_* and v_* of the ETL's schema).
# With ANALYST_PASSWORD it can log in; without, it is created NOLOGIN and an administrator
# enables it later: ALTER ROLE analyst LOGIN PASSWORD '…' (docs/deploy.md).
set -euo pipefail
if [[ -n "${ANALYST_PASSWORD:-}" ]]; then
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set analyst_password="$ANALYST_PASSWORD" <<'SQL'
CREATE ROLE analyst LOGIN PASSWORD :'analyst_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
SQL
else
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE analyst NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
SQL
fi
