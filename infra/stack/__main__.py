"""``python -m infra.stack {up [--prometheus]|down|status|reset|env|jdbc-jar|start NAME|stop NAME|prometheus up|down|status}``."""

from __future__ import annotations

import argparse
import json
import sys

import infra.stack
from infra.stack.control import down, procs, reset, status, up
from infra.stack.env import load_env
from infra.stack.postgres import pg_jdbc_jar
from infra.stack.processes import StackError, wait_for
from infra.stack.prometheus import prometheus_down, prometheus_status, prometheus_up


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stack", description=infra.stack.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("down", "status", "reset", "env", "jdbc-jar"):
        sub.add_parser(c)
    sp = sub.add_parser("up")
    sp.add_argument("--prometheus", action="store_true", help="also start Prometheus on the services (infra/stack/prometheus.py)")
    sp = sub.add_parser("prometheus", help="Prometheus scraping the local services with the project's rules")
    sp.add_argument("action", choices=("up", "down", "status"))
    for c in ("start", "stop"):
        sp = sub.add_parser(c)
        sp.add_argument("name", choices=sorted(procs()))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            up()
            if args.prometheus:
                prometheus_up()
        elif args.cmd == "prometheus":
            if args.action == "up":
                prometheus_up()
            elif args.action == "down":
                prometheus_down()
            else:
                return prometheus_status()
        elif args.cmd == "down":
            down()
        elif args.cmd == "status":
            return status()
        elif args.cmd == "reset":
            reset()
        elif args.cmd == "env":
            print(json.dumps(load_env(), indent=2))
        elif args.cmd == "jdbc-jar":
            print(pg_jdbc_jar())
        elif args.cmd == "start":
            p = procs()[args.name]
            p.start()
            wait_for(args.name, p.ready, log_file=p.log_file)
        elif args.cmd == "stop":
            procs()[args.name].stop()
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
