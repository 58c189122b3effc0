"""The whole stack: its processes, and ``up``, ``down``, ``status``, ``reset`` over them."""

from __future__ import annotations

import functools
import shutil
import time

from infra.stack.env import ENV_FILE, FERRETDB_VERSION, HOME, POSTGRES_PORT, load_env
from infra.stack.ferretdb import ferretdb_backend, ferretdb_bin, ferretdb_proc, mongo_ping
from infra.stack.kafka import kafka_libs, kafka_nodes, kafka_round_trip
from infra.stack.postgres import pg_bootstrap_sql, pg_jdbc_jar, pg_query_ok, postgres_proc
from infra.stack.processes import Proc, log, wait_for
from infra.stack.prometheus import prometheus_down


def procs() -> dict[str, Proc]:
    out = {"postgres": postgres_proc()}
    out.update({n.name: n.proc() for n in kafka_nodes()})
    out["ferretdb"] = ferretdb_proc()
    return out


def up() -> None:
    t0 = time.monotonic()
    env = load_env()
    kafka_libs()
    ferretdb_bin()
    pg_jdbc_jar()
    all_procs = procs()
    pg = all_procs["postgres"]
    if pg.start():
        log("started postgres")
    wait_for("postgres", pg.ready, log_file=pg.log_file)
    pg_bootstrap_sql(env)
    wait_for("postgres query as pipeline", lambda: pg_query_ok(env))
    for name, p in all_procs.items():
        if name != "postgres" and p.start():
            log(f"started {name}")
    for name, p in all_procs.items():
        wait_for(name, p.ready, log_file=p.log_file)
    wait_for("ferretdb ping", lambda: mongo_ping(env), log_file=all_procs["ferretdb"].log_file)
    for cluster in ("local", "remote"):
        probe = functools.partial(kafka_round_trip, cluster, env)
        wait_for(f"kafka {cluster} round trip", probe, log_file=all_procs[f"kafka-{cluster}-1"].log_file)
    log(f"stack ready in {time.monotonic() - t0:.1f}s")
    status()


def down() -> None:
    # Prometheus (python -m infra.stack prometheus up) first: it only watches the rest.
    prometheus_down()
    # Kafka first (brokers flush), FerretDB before its PostgreSQL backend, PostgreSQL last.
    order = [n.name for n in kafka_nodes()] + ["ferretdb", "postgres"]
    all_procs = procs()
    for name in order:
        if all_procs[name].stop():
            log(f"stopped {name}")


def status() -> int:
    env = load_env() if ENV_FILE.exists() else {}
    rows = []
    for name, p in procs().items():
        pid = p.pid()
        rows.append((name, "running" if pid else "stopped", str(pid or "-")))
    for r in rows:
        print(f"  {r[0]:<16} {r[1]:<8} pid {r[2]}")
    if env:
        print(f"  local kafka   {env['LOCAL_KAFKA_BOOTSTRAP_SERVERS']} (SASL/PLAIN user {env['LOCAL_KAFKA_SASL_USERNAME']})")
        print(f"  remote kafka  {env['REMOTE_KAFKA_BOOTSTRAP_SERVERS']} (SASL/PLAIN user {env['REMOTE_KAFKA_SASL_USERNAME']})")
        print(f"  mongodb       {env['MONGODB_URI']} (FerretDB {FERRETDB_VERSION}, {ferretdb_backend()} backend)")
        print(f"  postgresql    127.0.0.1:{POSTGRES_PORT} db warehouse user pipeline")
        print(f"  credentials   {ENV_FILE}  (source it: set -a; . {ENV_FILE}; set +a)")
    return 0 if all(r[1] == "running" for r in rows) else 3


def reset() -> None:
    down()
    pg_link = HOME / "data" / "postgres"
    if pg_link.is_symlink():
        shutil.rmtree(pg_link.resolve(), ignore_errors=True)
    shutil.rmtree(HOME / "data", ignore_errors=True)
    shutil.rmtree(HOME / "logs", ignore_errors=True)
    log(f"wiped {HOME / 'data'} and {HOME / 'logs'} (credentials kept in {ENV_FILE})")
