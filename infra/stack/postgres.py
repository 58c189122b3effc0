"""PostgreSQL: the server from Debian's packages, its data directory, the pipeline and analyst roles, the databases; Spark's JDBC driver."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from infra.stack.env import CACHE, HOME, PG_JDBC_VERSION, POSTGRES_PORT
from infra.stack.processes import Proc, StackError, log, run


def pg_jdbc_jar() -> Path:
    """The PostgreSQL JDBC driver Spark writes with, from Maven Central."""
    jar = CACHE / "jars" / f"postgresql-{PG_JDBC_VERSION}.jar"
    if not jar.exists():
        jar.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                f"-Dmaven.repo.local={CACHE / 'm2'}",
                "dependency:copy",
                f"-Dartifact=org.postgresql:postgresql:{PG_JDBC_VERSION}",
                f"-DoutputDirectory={jar.parent}",
            ]
        )
    return jar


def pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    if not candidates:
        log("installing PostgreSQL from Debian packages …")
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        run(["apt-get", "install", "-y", "-q", "postgresql"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    if not candidates:
        raise StackError("PostgreSQL server binaries not found under /usr/lib/postgresql after install")
    return candidates[0].parent


PG_USER = "postgres"  # the server refuses to run as root; Debian's package creates this user


def pg_data() -> Path:
    """PostgreSQL's data directory: ``.stack/data/postgres``.

    The server runs as the ``postgres`` user, which cannot enter a repo checked out under a
    private directory such as ``/root``; then the data lives in ``/var/tmp`` and
    ``.stack/data/postgres`` is a link to it (``reset`` removes both).
    """
    link = HOME / "data" / "postgres"
    if link.exists() or link.is_symlink():
        return link.resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(link.parent)], capture_output=True).returncode == 0:
        return link
    outside = Path("/var/tmp") / f"pipeline-postgres-{hashlib.sha256(str(HOME).encode()).hexdigest()[:12]}"
    link.symlink_to(outside)
    return outside


def pg_prepare() -> None:
    data = pg_data()
    if (data / "PG_VERSION").exists():
        return
    bindir = pg_bindir()
    data.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, PG_USER, PG_USER)
    HOME.chmod(0o755)
    (HOME / "data").chmod(0o755)
    run(
        [
            "runuser",
            "-u",
            PG_USER,
            "--",
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
    )
    conf = data / "postgresql.conf"
    with conf.open("a") as f:
        f.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {POSTGRES_PORT}\nunix_socket_directories = '{data}'\n"
            "max_connections = 100\nshared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\nwal_level = minimal\nmax_wal_senders = 0\n"
        )


def pg_bootstrap_sql(env: dict[str, str]) -> None:
    """Creates the pipeline role and databases; safe to repeat."""
    pw = env["POSTGRES_PASSWORD"].replace("'", "''")
    psql = [
        "runuser",
        "-u",
        PG_USER,
        "--",
        str(pg_bindir() / "psql"),
        "-h",
        str(pg_data()),
        "-p",
        str(POSTGRES_PORT),
        "-U",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-qAt",
    ]
    run(
        [
            *psql,
            "-d",
            "postgres",
            "-c",
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='pipeline') THEN CREATE ROLE pipeline LOGIN PASSWORD '{pw}'; "
            f"ELSE ALTER ROLE pipeline PASSWORD '{pw}'; END IF; END$$;",
        ]
    )
    for db in ("warehouse", "ferretdb"):
        exists = run([*psql, "-d", "postgres", "-c", f"SELECT 1 FROM pg_database WHERE datname='{db}'"]).stdout.strip()
        if not exists:
            run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {db} OWNER pipeline"])
    # The star schema's read-only role (sql/009_roles.sql grants it SELECT on the star and the
    # views of each schema the ETL creates); a superuser creates it so the ETL's role needs no
    # CREATEROLE. Its password: ANALYST_PASSWORD of stack.env (ANALYST_POSTGRES_DSN uses it).
    analyst_pw = env["ANALYST_PASSWORD"].replace("'", "''")
    run(
        [
            *psql,
            "-d",
            "postgres",
            "-c",
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='analyst') THEN "
            f"CREATE ROLE analyst LOGIN PASSWORD '{analyst_pw}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; "
            f"ELSE ALTER ROLE analyst LOGIN PASSWORD '{analyst_pw}'; END IF; END$$;",
        ]
    )


def pg_ready() -> bool:
    res = subprocess.run([str(pg_bindir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(POSTGRES_PORT)], check=False, capture_output=True)
    return res.returncode == 0


def pg_query_ok(env: dict[str, str]) -> bool:
    import asyncpg

    async def q() -> int:
        conn = await asyncpg.connect(env["POSTGRES_DSN"], timeout=5)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    return asyncio.run(q()) == 1


def postgres_proc() -> Proc:
    data = pg_data()
    return Proc("postgres", lambda: [str(pg_bindir() / "postgres"), "-D", str(data)], pg_ready, pg_prepare, user=PG_USER, marker=str(data))
