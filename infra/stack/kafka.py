"""Kafka: the jars from Maven Central, the KRaft nodes of the local (3 brokers) and remote (1 broker) clusters, a round-trip probe."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.stack.env import (
    CACHE,
    HOME,
    KAFKA_VERSION,
    LOCAL_BROKERS,
    LOCAL_CONTROLLER_PORT,
    LOCAL_INTERNAL_PORT,
    REMOTE_CONTROLLER_PORT,
    REMOTE_PORT,
    REPO,
    load_env,
)
from infra.stack.processes import Proc, StackError, log, port_open, run


def kafka_libs() -> Path:
    libs = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        log(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central …")
        tmp = libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(REPO / "infra/kafka/pom.xml"),
                f"-Dkafka.version={KAFKA_VERSION}",
                f"-Dmaven.repo.local={CACHE / 'm2'}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ]
        )
        tmp.rename(libs)
    return libs


def _java_argv(main: str, *args: str, heap: str = "512m", home: Path | None = None) -> list[str]:
    return [
        "java",
        "-Xms128m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{REPO / 'infra/kafka/log4j.properties'}",
        f"-Dkafka.logs.dir={(home or HOME) / 'logs'}",
        "-cp",
        str(kafka_libs() / "*"),
        main,
        *args,
    ]


@dataclass
class KafkaNode:
    cluster: str  # "local" | "remote"
    node_id: int
    client_port: int
    controller_port: int
    internal_port: int | None
    voters: str
    # A cluster outside the stack (tests start private ones): its own home directory, its own
    # credentials and cluster ids (the keys of stack.env), its own heap. Defaults: the stack's.
    home: Path | None = None
    env: dict[str, str] | None = None
    # 1 GiB: with 512 MiB a broker of a long-lived dev stack (thousands of test partitions, a
    # 300 k-event benchmark) died of OutOfMemoryError in its controller thread.
    heap: str = "1g"

    @property
    def name(self) -> str:
        return f"kafka-{self.cluster}-{self.node_id}"

    @property
    def dir(self) -> Path:
        return (self.home or HOME) / "data" / self.name

    def properties(self, env: dict[str, str]) -> str:
        if self.cluster == "local":
            user, pw = env["LOCAL_KAFKA_SASL_USERNAME"], env["LOCAL_KAFKA_SASL_PASSWORD"]
            rf, isr = 3, 2
        else:
            user, pw = env["REMOTE_KAFKA_SASL_USERNAME"], env["REMOTE_KAFKA_SASL_PASSWORD"]
            rf, isr = 1, 1
        listeners = [f"CLIENT://127.0.0.1:{self.client_port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"CLIENT://127.0.0.1:{self.client_port}"]
        proto = ["CLIENT:SASL_PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.internal_port:
            listeners.append(f"INTERNAL://127.0.0.1:{self.internal_port}")
            advertised.append(f"INTERNAL://127.0.0.1:{self.internal_port}")
            proto.append("INTERNAL:PLAINTEXT")
            inter = "INTERNAL"
        else:
            inter = "CLIENT"
        jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" password="{pw}" user_{user}="{pw}";'
        lines = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": self.voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(proto),
            "inter.broker.listener.name": inter,
            "controller.listener.names": "CONTROLLER",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.client.plain.sasl.jaas.config": jaas,
            "log.dirs": self.dir / "log",
            "num.partitions": 6,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 12,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 12,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            "unclean.leader.election.enable": "false",
            "log.retention.hours": 168,
            "message.max.bytes": 2 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def prepare(self) -> None:
        env = self.env if self.env is not None else load_env()
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self.properties(env))
        props.chmod(0o600)
        if not (self.dir / "log" / "meta.properties").exists():
            cid = env["KAFKA_LOCAL_CLUSTER_ID" if self.cluster == "local" else "KAFKA_REMOTE_CLUSTER_ID"]
            run(
                _java_argv(
                    "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(props), "--ignore-formatted", heap="256m", home=self.home
                )
            )

    def proc(self) -> Proc:
        return Proc(
            self.name,
            lambda: _java_argv("kafka.Kafka", str(self.dir / "server.properties"), heap=self.heap, home=self.home),
            lambda: port_open(self.client_port),
            self.prepare,
            home=self.home,
        )


def kafka_nodes() -> list[KafkaNode]:
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in LOCAL_CONTROLLER_PORT.items())
    nodes = [KafkaNode("local", i, LOCAL_BROKERS[i], LOCAL_CONTROLLER_PORT[i], LOCAL_INTERNAL_PORT[i], voters) for i in LOCAL_BROKERS]
    nodes.append(KafkaNode("remote", 1, REMOTE_PORT, REMOTE_CONTROLLER_PORT, None, f"1@127.0.0.1:{REMOTE_CONTROLLER_PORT}"))
    return nodes


def kafka_round_trip(cluster: str, env: dict[str, str]) -> bool:
    """Creates the health topic if needed and proves a produce → consume round trip."""
    sys.path.insert(0, str(REPO))
    from shared.kafka import KafkaConnection, create_topics

    conn = KafkaConnection.from_env(env, prefix=f"{cluster.upper()}_KAFKA_")
    rf = 3 if cluster == "local" else 1

    async def probe() -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        topic = "_stack_health"
        await create_topics(conn, [topic], partitions=1, replication_factor=rf)
        token = uuid.uuid4().hex.encode()
        producer = AIOKafkaProducer(**conn.client_kwargs(), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            md = await producer.send_and_wait(topic, token)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, md.offset)
            batch = await consumer.getmany(tp, timeout_ms=10_000)
            values = [m.value for m in batch.get(tp, [])]
            if token not in values:
                raise StackError(f"kafka {cluster}: produced {token!r} at offset {md.offset} but did not read it back")
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(probe(), 60))
    return True
