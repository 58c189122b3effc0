"""Prometheus for the local stack's services: ``python -m infra.stack prometheus up|down|status``
(and ``up --prometheus``, ``down`` stops it too).

It scrapes every address ``infra.services`` gives a service, replicas 1 to 3 (base port +
10·(i−1)), with the compose deployment's job names, scrape interval and alert rules at time
scale 1 (``infra.prometheus``). A replica that is not running is a target that is down: its
``PipelineServiceDown`` fires after 2 minutes, as a missing container's would. The files, the
TSDB live in ``.stack/data/prometheus/`` (``reset`` wipes them), the PID file and log where the
other parts' are: ``.stack/run/prometheus.pid``, ``.stack/logs/prometheus.log``. The port is
9090 (+ ``STACK_PORT_OFFSET``), or ``PROMETHEUS_PORT``.
"""

from __future__ import annotations

import os

from infra.prometheus import PrometheusError, PrometheusServer
from infra.stack.env import HOME
from infra.stack.processes import Proc, StackError, log, wait_for

_OFF = int(os.environ.get("STACK_PORT_OFFSET", "0"))
PROMETHEUS_PORT = int(os.environ.get("PROMETHEUS_PORT", str(9090 + _OFF)))
REPLICAS = 3


def local_targets(replicas: int = REPLICAS) -> dict[str, list[str]]:
    """Each service's job → its replicas' ``127.0.0.1:port`` (etl-api runs as one process)."""
    from infra.services import SERVICES, port_of  # infra.services imports infra.stack: not at import time

    return {
        svc.name: [f"127.0.0.1:{port_of(svc, i)}" for i in range(1, (replicas if svc.scalable else 1) + 1)] for svc in SERVICES.values()
    }


def prometheus_server() -> PrometheusServer:
    return PrometheusServer(HOME / "data" / "prometheus", local_targets(), port=PROMETHEUS_PORT)


def prometheus_proc() -> Proc:
    server = prometheus_server()

    def argv() -> list[str]:
        try:
            return server.argv()
        except PrometheusError as exc:
            raise StackError(str(exc)) from exc

    # the config path names this stack's home: a recycled PID is never taken for ours
    return Proc("prometheus", argv, server.ready, prepare=server.write_files, marker=f"--config.file={server.config_path}")


def prometheus_up() -> None:
    p = prometheus_proc()
    if p.start():
        log(f"started prometheus on http://127.0.0.1:{PROMETHEUS_PORT}")
    try:
        wait_for("prometheus", p.ready, timeout=60, log_file=p.log_file)
    except StackError:
        p.stop()
        raise


def prometheus_down() -> None:
    if prometheus_proc().stop():
        log("stopped prometheus")


def prometheus_status() -> int:
    pid = prometheus_proc().pid()
    where = f"http://127.0.0.1:{PROMETHEUS_PORT}" if pid else "-"
    print(f"  {'prometheus':<16} {'running' if pid else 'stopped':<8} pid {pid or '-'}  {where}")
    return 0 if pid else 3
