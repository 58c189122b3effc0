"""FerretDB (the MongoDB endpoint): built from the Go module proxy, on the PostgreSQL or SQLite backend."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from infra.stack.env import CACHE, FERRETDB_PORT, FERRETDB_VERSION, HOME, load_env
from infra.stack.processes import Proc, log, port_open, run


def ferretdb_bin() -> Path:
    gobin = CACHE / "go" / "bin"
    binary = gobin / "ferretdb"
    if not binary.exists():
        # `go install …/cmd/ferretdb@v1.24.2` fetches the module but the binary panics at start:
        # the module zip lacks the generated build/version/version.txt that FerretDB embeds.
        # So: fetch the very same module from the Go module proxy, write that one file, build.
        log(f"building FerretDB {FERRETDB_VERSION} from the Go module proxy …")
        env = {**os.environ, "GOPATH": str(CACHE / "go"), "GOFLAGS": "-modcacherw", "CGO_ENABLED": "0"}
        mod = json.loads(run(["go", "mod", "download", "-json", f"github.com/FerretDB/FerretDB@{FERRETDB_VERSION}"], env=env).stdout)
        src = CACHE / "go" / "ferretdb-src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(mod["Dir"], src)
        for p in src.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        gobin.mkdir(parents=True, exist_ok=True)
        run(["go", "build", "-trimpath", "-o", str(binary), "./cmd/ferretdb"], env=env, cwd=src)
        shutil.rmtree(src, ignore_errors=True)
    return binary


def ferretdb_backend() -> str:
    """PostgreSQL by default (see README and bench/ferretdb_backends.py): SQLite inserts ~1.3-1.5x
    faster, but FerretDB pushes no filter down to SQLite, so the ETL's equality reads per
    partition scan the whole collection and run ~11x slower there."""
    return os.environ.get("FERRETDB_BACKEND", "postgresql")


def ferretdb_postgresql_url(env: dict[str, str]) -> str:
    """FerretDB's own database on the stack's PostgreSQL server (its PostgreSQL backend)."""
    return env["POSTGRES_DSN"].rsplit("/", 1)[0] + "/ferretdb"


def ferretdb_argv() -> list[str]:
    data = HOME / "data" / "ferretdb"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(ferretdb_bin()),
        f"--listen-addr=127.0.0.1:{FERRETDB_PORT}",
        "--telemetry=disable",
        f"--state-dir={data}",
        "--log-level=warn",
        "--debug-addr=-",
    ]
    if ferretdb_backend() == "postgresql":
        return [*argv, "--handler=postgresql", f"--postgresql-url={ferretdb_postgresql_url(load_env())}"]
    (data / "sqlite").mkdir(exist_ok=True)
    return [*argv, "--handler=sqlite", f"--sqlite-url=file:{data / 'sqlite'}/"]


def mongo_ping(env: dict[str, str]) -> bool:
    from pymongo import MongoClient

    client: MongoClient = MongoClient(env["MONGODB_URI"], serverSelectionTimeoutMS=2000)
    with client:
        return client.admin.command("ping").get("ok") == 1.0


def ferretdb_proc() -> Proc:
    return Proc("ferretdb", ferretdb_argv, lambda: port_open(FERRETDB_PORT))
