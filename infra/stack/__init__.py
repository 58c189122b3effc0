"""The local stack: real Kafka (3-broker local + 1-broker "remote"), FerretDB and PostgreSQL on loopback.

Usage: python -m infra.stack {up [--prometheus]|down|status|reset|env|jdbc-jar|start NAME|stop NAME|prometheus up|down|status}

Everything lives under STACK_HOME (default ``.stack/`` in the repo, git-ignored): data, logs,
PID files and ``stack.env``, the generated credentials and addresses every service and test reads.
Downloads (Kafka jars, the FerretDB binary) are cached under ``.cache/`` so a second ``up`` on the
same machine downloads nothing.  ``up`` is idempotent and returns only when every part answered a
real request (a produce/consume round trip on each Kafka cluster, a ping, a query).
``down`` stops only what ``up`` started, found through PID files.

The package, by part: ``env`` (paths, versions, ports, ``stack.env``), ``processes`` (commands,
readiness waits, PID-file processes), ``kafka``, ``postgres``, ``ferretdb``, ``prometheus`` (an
optional Prometheus scraping the services), ``control`` (the whole stack: up, down, status,
reset) and ``__main__`` (the command line).  Everything else is re-exported here, so
``from infra.stack import …`` names what it always named.
"""

from __future__ import annotations

from infra.stack.control import (
    down,
    procs,
    reset,
    status,
    up,
)
from infra.stack.env import (
    CACHE,
    ENV_FILE,
    FERRETDB_PORT,
    FERRETDB_VERSION,
    HOME,
    KAFKA_VERSION,
    LOCAL_BROKERS,
    LOCAL_CONTROLLER_PORT,
    LOCAL_INTERNAL_PORT,
    PG_JDBC_VERSION,
    POSTGRES_PORT,
    REMOTE_CONTROLLER_PORT,
    REMOTE_PORT,
    REPO,
    _cluster_id,
    load_env,
)
from infra.stack.ferretdb import (
    ferretdb_argv,
    ferretdb_backend,
    ferretdb_bin,
    ferretdb_postgresql_url,
    ferretdb_proc,
    mongo_ping,
)
from infra.stack.kafka import (
    KafkaNode,
    kafka_libs,
    kafka_nodes,
    kafka_round_trip,
)
from infra.stack.postgres import (
    PG_USER,
    pg_bindir,
    pg_bootstrap_sql,
    pg_data,
    pg_jdbc_jar,
    pg_prepare,
    pg_query_ok,
    pg_ready,
    postgres_proc,
)
from infra.stack.processes import (
    READY_TIMEOUT_S,
    Proc,
    StackError,
    log,
    port_open,
    run,
    wait_for,
)

__all__ = [
    "CACHE",
    "ENV_FILE",
    "FERRETDB_PORT",
    "FERRETDB_VERSION",
    "HOME",
    "KAFKA_VERSION",
    "LOCAL_BROKERS",
    "LOCAL_CONTROLLER_PORT",
    "LOCAL_INTERNAL_PORT",
    "PG_JDBC_VERSION",
    "PG_USER",
    "POSTGRES_PORT",
    "READY_TIMEOUT_S",
    "REMOTE_CONTROLLER_PORT",
    "REMOTE_PORT",
    "REPO",
    "KafkaNode",
    "Proc",
    "StackError",
    "_cluster_id",
    "down",
    "ferretdb_argv",
    "ferretdb_backend",
    "ferretdb_bin",
    "ferretdb_postgresql_url",
    "ferretdb_proc",
    "kafka_libs",
    "kafka_nodes",
    "kafka_round_trip",
    "load_env",
    "log",
    "mongo_ping",
    "pg_bindir",
    "pg_bootstrap_sql",
    "pg_data",
    "pg_jdbc_jar",
    "pg_prepare",
    "pg_query_ok",
    "pg_ready",
    "port_open",
    "postgres_proc",
    "procs",
    "reset",
    "run",
    "status",
    "up",
    "wait_for",
]
