"""MongoDB's Kafka sink connector (``org.mongodb.kafka:mongo-kafka-connect``) on Kafka Connect
standalone: the sink's peer in ``bench/sink_vs_connector.py``.

The connector's jars come from Maven Central, resolved by ``bench/sink_connector_pom.xml`` into
``.cache/connect-plugins/``; Connect itself runs from the stack's Kafka jars.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.probes import free_port, stop
from infra.stack import CACHE, REPO, kafka_libs
from shared.kafka import KafkaConnection

PLUGINS = CACHE / "connect-plugins"
POM = REPO / "bench" / "sink_connector_pom.xml"


def ensure_connector_jars() -> None:
    if any((PLUGINS / "mongo-kafka-connect").glob("mongo-kafka-connect-*.jar")):
        return
    print("resolving org.mongodb.kafka:mongo-kafka-connect from Maven Central …", flush=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dmaven.repo.local={CACHE / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={PLUGINS / 'mongo-kafka-connect'}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )


def task_failure(port: int, name: str) -> str | None:
    """The first FAILED task's trace from Connect's REST API, or None (also while it starts)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/{name}/status", timeout=2) as r:
            status = orjson.loads(r.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    for task in status.get("tasks", []):
        if task.get("state") == "FAILED":
            return f"connector task failed: {task.get('trace', '')[:500]}"
    return None


@dataclass(frozen=True)
class SinkConnector:
    """One MongoDB sink connector: what it reads and where it writes, and how."""

    topic: str
    database: str
    collection: str
    uri: str
    tasks: int  # tasks.max
    mode: str  # "insert": InsertOneDefaultStrategy; "upsert": the connector's default replace-one upsert
    batch: int  # consumer.max.poll.records

    @property
    def name(self) -> str:
        return f"{self.topic}-mongo"


def connect_files(work: Path, conn: KafkaConnection, spec: SinkConnector, rest_port: int) -> tuple[Path, Path]:
    user = conn.sasl_username or ""
    pw = conn.sasl_password.get_secret_value() if conn.sasl_password else ""
    jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" password="{pw}";'
    security = {
        "security.protocol": conn.security_protocol,
        "sasl.mechanism": conn.sasl_mechanism,
        "sasl.jaas.config": jaas,
    }
    worker = {
        "bootstrap.servers": conn.bootstrap_servers,
        **security,
        **{f"consumer.{k}": v for k, v in security.items()},
        **{f"producer.{k}": v for k, v in security.items()},
        "consumer.isolation.level": "read_committed",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(work / "connect.offsets"),
        "offset.flush.interval.ms": "1000",
        # the same batch size as the sink's default (the connector writes one bulk per poll)
        "consumer.max.poll.records": str(spec.batch),
        "plugin.path": str(PLUGINS),
        "listeners": f"http://127.0.0.1:{rest_port}",
    }
    connector = {
        "name": spec.name,
        "connector.class": "com.mongodb.kafka.connect.MongoSinkConnector",
        "tasks.max": str(spec.tasks),
        "topics": spec.topic,
        "connection.uri": spec.uri,
        "database": spec.database,
        "collection": spec.collection,
        "transforms": "id",
        "transforms.id.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.id.renames": "event_id:_id",
        "document.id.strategy": "com.mongodb.kafka.connect.sink.processor.id.strategy.ProvidedInValueStrategy",
        "errors.tolerance": "none",
    }
    if spec.mode == "insert":
        # Plain inserts, like the sink's insert_many; a redelivered record would fail on its
        # duplicate _id, so this mode is the connector's fastest, not an idempotent one.
        connector["writemodel.strategy"] = "com.mongodb.kafka.connect.sink.writemodel.strategy.InsertOneDefaultStrategy"
    wp, cp = work / "worker.properties", work / "connector.properties"
    wp.write_text("".join(f"{k}={v}\n" for k, v in worker.items()))
    cp.write_text("".join(f"{k}={v}\n" for k, v in connector.items()))
    return wp, cp


@dataclass
class ConnectWorker:
    """A running Kafka Connect standalone worker with one MongoDB sink connector."""

    name: str
    proc: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before the process started
    rest_port: int

    def failure(self) -> str | None:
        return task_failure(self.rest_port, self.name)


LOG4J = (
    "log4j.rootLogger=WARN, stdout\n"
    "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
    "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
    "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
    # one WARN per record ("Cannot overwrite the existing '_id'") would measure log4j
    "log4j.logger.com.mongodb.kafka.connect.sink.processor.DocumentIdAdder=ERROR\n"
)


@contextlib.contextmanager
def connect_standalone(conn: KafkaConnection, spec: SinkConnector, log: Path) -> Iterator[ConnectWorker]:
    """Kafka Connect standalone running ``spec`` (consumer group ``connect-<spec.name>``); stopped (SIGTERM,
    SIGKILL after 30 s) and its work directory removed on exit."""
    ensure_connector_jars()
    work = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    try:
        rest = free_port()
        wp, cp = connect_files(work, conn, spec, rest)
        log4j = work / "log4j.properties"
        log4j.write_text(LOG4J)
        argv = [
            "java",
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            str(kafka_libs() / "*"),
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(wp),
            str(cp),
        ]
        with log.open("wb") as out:
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=work)
        try:
            yield ConnectWorker(spec.name, proc, started, rest)
        finally:
            stop(proc, timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
