"""Supervises the pipeline's own services on the local stack: the stand-in for container scaling.

    python -m infra.services start [bridge|sink|etl-api|live|all] [--replicas N]
    python -m infra.services stop [NAME|all]      python -m infra.services status
    python -m infra.services logs NAME [-n LINES]

Replica ``i`` (1-based) of a service listens on its base port + 10·(i−1); every replica of the
bridge or the sink joins the same consumer group, so replicas split the partitions. Each process
gets the stack's environment (``.stack/stack.env``) plus its HTTP port, a PID file under
``.stack/run`` and a log under ``.stack/logs``. ``start`` returns once each replica answers
``/ready`` (or fails with the last lines of its log).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from dataclasses import dataclass

from infra.stack import HOME, Proc, StackError, ferretdb_backend, ferretdb_postgresql_url, load_env, log, wait_for


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    env_prefix: str
    base_port: int
    scalable: bool

    @property
    def port_env(self) -> str:
        return "ETL_PORT" if self.name == "etl-api" else f"{self.env_prefix}HTTP_PORT"


SERVICES = {
    s.name: s
    for s in (
        Service("bridge", "bridge", "BRIDGE_", 8101, True),
        Service("sink", "sink", "SINK_", 8102, True),
        Service("etl-api", "etl_api", "ETL_", 8103, False),
        Service("live", "live", "LIVE_", 8104, True),
    )
}


def port_of(svc: Service, replica: int) -> int:
    return svc.base_port + 10 * (replica - 1)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def proc_of(svc: Service, replica: int, extra_env: dict[str, str] | None = None) -> Proc:
    port = port_of(svc, replica)
    env = {**load_env(), svc.port_env: str(port), **(extra_env or {})}
    if svc.name == "live":  # faust's local table state, one folder per replica
        (HOME / "live").mkdir(parents=True, exist_ok=True)
        env.setdefault("LIVE_DATA_DIR", str(HOME / "live" / f"replica-{replica}"))
    if ferretdb_backend() == "postgresql":
        # The stand-in's own GIN indexes (shared.ferretdb): FerretDB's database on the stack's server.
        if svc.name == "etl-api":
            env.setdefault("ETL_FERRETDB_POSTGRESQL_URL", ferretdb_postgresql_url(env))
        elif svc.name == "sink":
            env.setdefault("SINK_FERRETDB_POSTGRESQL_URL", ferretdb_postgresql_url(env))
    return Proc(
        f"svc-{svc.name}-{replica}", lambda: [sys.executable, "-m", svc.module], lambda: _ready(port), env=env, marker=f"-m {svc.module}"
    )


def replicas_running(svc: Service) -> list[int]:
    run_dir = HOME / "run"
    found = []
    for pid_file in sorted(run_dir.glob(f"svc-{svc.name}-*.pid")):
        replica = int(pid_file.stem.rsplit("-", 1)[1])
        if proc_of(svc, replica).running():
            found.append(replica)
    return found


def start(names: list[str], replicas: int = 1, extra_env: dict[str, str] | None = None, timeout: float = 120) -> None:
    for name in names:
        svc = SERVICES[name]
        if replicas > 1 and not svc.scalable:
            raise StackError(f"{name} runs as one process (it is not a consumer-group member)")
        procs = [proc_of(svc, i, extra_env) for i in range(1, replicas + 1)]
        for p in procs:
            if p.start():
                log(f"started {p.name} on port {port_of(svc, int(p.name.rsplit('-', 1)[1]))}")
        for p in procs:
            wait_for(p.name, p.ready, timeout=timeout, log_file=p.log_file)
        # Scaling down: replicas above the requested count stop.
        for extra in [r for r in replicas_running(svc) if r > replicas]:
            proc_of(svc, extra).stop()
            log(f"stopped svc-{name}-{extra} (scaled to {replicas})")


def stop(names: list[str]) -> None:
    for name in names:
        svc = SERVICES[name]
        for replica in replicas_running(svc):
            if proc_of(svc, replica).stop(timeout=15):
                log(f"stopped svc-{name}-{replica}")


def status() -> None:
    for svc in SERVICES.values():
        running = replicas_running(svc)
        if not running:
            print(f"  {svc.name:<8} stopped")
        for r in running:
            port = port_of(svc, r)
            print(f"  {svc.name:<8} replica {r}  http://127.0.0.1:{port}  ready={_ready(port)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="services", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    names = [*SERVICES, "all"]
    sp = sub.add_parser("start")
    sp.add_argument("name", choices=names)
    sp.add_argument("--replicas", type=int, default=1)
    sp = sub.add_parser("stop")
    sp.add_argument("name", choices=names)
    sub.add_parser("status")
    sp = sub.add_parser("logs")
    sp.add_argument("name", help="service or process, e.g. sink or svc-sink-2")
    sp.add_argument("-n", type=int, default=50)
    args = ap.parse_args(argv)
    selected = list(SERVICES) if getattr(args, "name", None) == "all" else [getattr(args, "name", "")]
    try:
        if args.cmd == "start":
            start(selected, args.replicas)
        elif args.cmd == "stop":
            stop(selected)
        elif args.cmd == "status":
            status()
        elif args.cmd == "logs":
            name = args.name if args.name.startswith("svc-") else f"svc-{args.name}-1"
            path = HOME / "logs" / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else [f"(no log at {path})"]
            print("\n".join(lines[-args.n :]))
    except StackError as exc:
        print(f"[services] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
