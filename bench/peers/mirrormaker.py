"""Kafka MirrorMaker 2 (``org.apache.kafka.connect.mirror.MirrorMaker``, dedicated mode): the
bridge's peer in ``bench/bridge_vs_mirrormaker.py``.

Its jars are the stack's Kafka version from Maven Central, resolved by ``bench/bridge_mm2_pom.xml``
into ``.cache/mm2-<version>/libs``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from infra.stack import CACHE, KAFKA_VERSION, REPO
from shared.kafka import KafkaConnection

MM2_LIBS = CACHE / f"mm2-{KAFKA_VERSION}" / "libs"


def mm2_libs() -> Path:
    if not (MM2_LIBS / f"connect-mirror-{KAFKA_VERSION}.jar").exists():
        print("resolving connect-mirror from Maven Central …", flush=True)
        tmp = MM2_LIBS.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(REPO / "bench" / "bridge_mm2_pom.xml"),
                f"-Dkafka.version={KAFKA_VERSION}",
                f"-Dmaven.repo.local={CACHE / 'm2'}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
        tmp.rename(MM2_LIBS)
    return MM2_LIBS


def mm2_properties(remote: KafkaConnection, local: KafkaConnection, src: str, dst: str, topic: str, partitions: int, eos: bool) -> str:
    def cluster(alias: str, conn: KafkaConnection) -> list[str]:
        lines = [f"{alias}.bootstrap.servers = {conn.bootstrap_servers}", f"{alias}.security.protocol = {conn.security_protocol}"]
        if conn.security_protocol.startswith("SASL"):
            password = conn.sasl_password.get_secret_value() if conn.sasl_password else ""
            lines += [
                f"{alias}.sasl.mechanism = {conn.sasl_mechanism}",
                f"{alias}.sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{conn.sasl_username}" password="{password}";',
            ]
        return lines

    lines = [
        f"clusters = {src}, {dst}",
        *cluster(src, remote),
        *cluster(dst, local),
        f"{src}->{dst}.enabled = true",
        f"{src}->{dst}.topics = {topic}",
        f"{dst}->{src}.enabled = false",
        f"tasks.max = {partitions}",
        "replication.factor = 3",
        "offset-syncs.topic.location = target",
        "offset-syncs.topic.replication.factor = 3",
        "heartbeats.topic.replication.factor = 3",
        "checkpoints.topic.replication.factor = 3",
        "offset.storage.replication.factor = 3",
        "config.storage.replication.factor = 3",
        "status.storage.replication.factor = 3",
        "emit.heartbeats.enabled = false",
        "emit.checkpoints.enabled = false",
        "sync.group.offsets.enabled = false",
        "sync.topic.acls.enabled = false",
        "refresh.topics.interval.seconds = 2",
        "refresh.groups.enabled = false",
    ]
    if eos:
        lines += ["exactly.once.source.support = enabled", f"{dst}.exactly.once.source.support = enabled"]
    return "\n".join(lines) + "\n"


def mm2_argv(properties: Path, target: str, logs: Path) -> list[str]:
    """The command line of a dedicated MirrorMaker 2 that replicates into the cluster ``target``."""
    return [
        "java",
        "-Xms256m",
        "-Xmx1g",
        f"-Dlog4j.configuration=file:{REPO / 'infra/kafka/log4j.properties'}",
        f"-Dkafka.logs.dir={logs}",
        "-cp",
        str(mm2_libs() / "*"),
        "org.apache.kafka.connect.mirror.MirrorMaker",
        str(properties),
        "--clusters",
        target,
    ]
