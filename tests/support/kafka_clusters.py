"""Private Kafka clusters for tests that stop brokers: never the shared stack's.

A test that stops and restarts brokers cannot use the shared stack (other suites run against it
at the same time), so :class:`PrivateKafka` starts its own pair of clusters with the stack's own
code (``infra.stack.KafkaNode``, the Kafka jars in ``.cache/``), in a temporary directory, on
ports found free at run time:

- "local": 3 KRaft brokers (each also a controller), SASL/PLAIN, RF 3, min ISR 2, like the stack;
- "remote": 1 KRaft broker, SASL/PLAIN.

Ports are drawn at random from 10000-18999: below the kernel's ephemeral range (so an outgoing
connection cannot take one while its broker is down) and clear of every stack port (19091 and
up, with or without ``STACK_PORT_OFFSET``=1000), so a stack or a CI run beside this one never
collides. Brokers are stopped with SIGTERM (a clean shutdown) or SIGKILL (a crash) and
restarted with the same data directories and ports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import secrets
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from infra.stack import KafkaNode, Proc, _cluster_id, kafka_libs, kafka_round_trip, port_open, wait_for
from shared.kafka import KafkaConnection

PORT_RANGE = (10000, 18999)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on, each proven bindable right now."""
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(chosen) < count:
            port = random.randint(*PORT_RANGE)
            if port in chosen:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)  # held until all are chosen: no duplicates
            chosen.append(port)
    finally:
        for s in held:
            s.close()
    return chosen


class PrivateKafka:
    """A 3-broker "local" and a 1-broker "remote" cluster of this test session's own."""

    def __init__(self, heap: str = "384m") -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bridge-kafka-"))
        self.env = {
            "LOCAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LOCAL_KAFKA_SASL_MECHANISM": "PLAIN",
            "LOCAL_KAFKA_SASL_USERNAME": "pipeline",
            "LOCAL_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(12),
            "REMOTE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "REMOTE_KAFKA_SASL_MECHANISM": "PLAIN",
            "REMOTE_KAFKA_SASL_USERNAME": "source",
            "REMOTE_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(12),
            "KAFKA_LOCAL_CLUSTER_ID": _cluster_id(),
            "KAFKA_REMOTE_CLUSTER_ID": _cluster_id(),
        }
        ports = free_ports(11)
        client, controller, internal = ports[0:3], ports[3:6], ports[6:9]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(controller))
        self.local_nodes = [
            KafkaNode("local", i + 1, client[i], controller[i], internal[i], voters, home=self.home, env=self.env, heap=heap)
            for i in range(3)
        ]
        remote_port, remote_controller = ports[9], ports[10]
        self.remote_nodes = [
            KafkaNode(
                "remote",
                1,
                remote_port,
                remote_controller,
                None,
                f"1@127.0.0.1:{remote_controller}",
                home=self.home,
                env=self.env,
                heap=heap,
            )
        ]
        self.env["LOCAL_KAFKA_BOOTSTRAP_SERVERS"] = ",".join(f"127.0.0.1:{p}" for p in client)
        self.env["REMOTE_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{remote_port}"
        self._procs: dict[str, Proc] = {n.name: n.proc() for n in [*self.local_nodes, *self.remote_nodes]}

    # ------------------------------------------------------------------ connections

    def connection(self, cluster: str) -> KafkaConnection:
        return KafkaConnection.from_env(self.env, prefix=f"{cluster.upper()}_KAFKA_")

    def client_env(self) -> dict[str, str]:
        """The ``LOCAL_KAFKA_*`` / ``REMOTE_KAFKA_*`` variables a service needs to use these clusters."""
        return {k: v for k, v in self.env.items() if k.startswith(("LOCAL_KAFKA_", "REMOTE_KAFKA_"))}

    def nodes(self, cluster: str) -> list[KafkaNode]:
        return self.local_nodes if cluster == "local" else self.remote_nodes

    def log_files(self) -> list[Path]:
        return [p.log_file for p in self._procs.values()]

    # ------------------------------------------------------------------ lifecycle

    def start(self, cluster: str | None = None, *, timeout_s: float = 180.0) -> float:
        """Starts the brokers of ``cluster`` (both clusters when None) and waits until each
        cluster proves a produce/consume round trip. Returns the seconds it took."""
        started = time.monotonic()
        kafka_libs()
        clusters = [cluster] if cluster else ["local", "remote"]
        procs = [self._procs[n.name] for c in clusters for n in self.nodes(c)]
        for p in procs:
            p.start()
        for p in procs:
            wait_for(p.name, p.ready, timeout=timeout_s, log_file=p.log_file)
        for c in clusters:
            log_file = self._procs[self.nodes(c)[0].name].log_file
            wait_for(
                f"private kafka {c} round trip", functools.partial(kafka_round_trip, c, self.env), timeout=timeout_s, log_file=log_file
            )
        return time.monotonic() - started

    def stop(self, cluster: str, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> list[str]:
        """Signals every broker of ``cluster`` at once (SIGTERM: clean shutdown; SIGKILL: crash)
        and waits until all are gone. A broker still alive ``timeout_s`` after SIGTERM is killed
        (a KRaft broker whose controllers are shutting down too can wait long for its controlled
        shutdown); returns the names of those that had to be killed."""
        pids = {n.name: pid for n in self.nodes(cluster) if (pid := self._procs[n.name].pid()) is not None}
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        killed: list[str] = []
        deadline = time.monotonic() + timeout_s
        while alive := [name for name, pid in pids.items() if _alive(pid)]:
            if time.monotonic() > deadline and sig != signal.SIGKILL:
                for name in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pids[name], signal.SIGKILL)
                killed, sig = alive, signal.SIGKILL
                deadline = time.monotonic() + 30
            assert time.monotonic() < deadline + 60, f"brokers {alive} survive SIGKILL"
            time.sleep(0.1)
        # A JVM's main thread turns zombie before its other threads have exited (and closed the
        # sockets): wait for the ports too.
        deadline = time.monotonic() + 30
        for node in self.nodes(cluster):
            self._procs[node.name].pid_file.unlink(missing_ok=True)
            for port in (node.client_port, node.controller_port, node.internal_port):
                while port is not None and port_open(port):
                    assert time.monotonic() < deadline, f"{node.name} stopped but something still listens on {port}"
                    time.sleep(0.1)
        return killed

    def running(self, cluster: str) -> list[bool]:
        return [self._procs[n.name].running() for n in self.nodes(cluster)]

    def close(self, logs_to: Path | None = None) -> None:
        """Stops everything, copies the brokers' logs to ``logs_to`` (if given) and removes the directory."""
        try:
            for cluster in ("remote", "local"):
                self.stop(cluster, timeout_s=20)
        finally:
            if logs_to is not None:
                logs_to.mkdir(parents=True, exist_ok=True)
                for log in self.log_files():
                    if log.exists():
                        shutil.copy(log, logs_to / log.name)
            shutil.rmtree(self.home, ignore_errors=True)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a child that exited is reaped here, so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
