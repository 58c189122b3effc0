# ruff: noqa: E501
"""Benchmark: the bridge against Kafka MirrorMaker 2 and a raw aiokafka copier, copying the same
events remote → local.

    .venv/bin/python -m bench.bridge_vs_mirrormaker [--events 1000000] [--partitions 6]
        [--latency-rates 2000,5000 --latency-seconds 20] [--mm2-mode eos|default|skip]
        [--copiers bridge,mm2,raw] [--latency-only] [--bridge-env KEY=VALUE ...]

All three copy one topic of generator events (Glamira shape, ~1 KB, no bad records) from the
remote cluster to the local one, one after the other in the same run, on the same clusters:

- the bridge: ``python -m bridge`` (exactly once: one transaction per partition batch);
- MirrorMaker 2 (``org.apache.kafka.connect.mirror.MirrorMaker``, dedicated mode, Kafka 3.9.1 jars
  from Maven Central via ``bench/bridge_mm2_pom.xml``), with ``exactly.once.source.support =
  enabled`` (``--mm2-mode eos``) or its default at-least-once mode;
- the ceiling: ``bench/peers/raw_copier.py``, a bare consume → produce loop with the bridge's
  client settings and batching, at least once, no transactions: what the machine, the clusters
  and aiokafka allow, so bridge / raw is what exactly-once and the per-record work cost.

Throughput is events/s seen by a ``read_committed`` consumer of the target topic: "total" from
process start to the last event, "steady" between 10 % and 90 % of the events. Latency, for each
copier at each ``--latency-rates`` rate: the time a ``read_committed`` consumer of the target topic
receives a record minus the remote broker's append time (each latency run has its own source
topic with ``LogAppendTime``, and the copier is warmed up first); the bridge's own per-phase
timings (``/metrics``) are printed with it. Not a test: it prints Markdown tables and writes
``bench/results/bridge_vs_mirrormaker.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "services" / "bridge"))
sys.path.insert(0, str(REPO / "tools" / "eventgen"))

import eventgen  # noqa: E402

from bench.copy_measure import Copier, Run, bridge_source_key, bridge_target_key, latency, throughput  # noqa: E402
from bench.peers.mirrormaker import mm2_argv, mm2_properties  # noqa: E402
from bench.probes import drop_topics, free_port, load_stack_env, loadavg, run_cleaning_up  # noqa: E402
from shared.kafka import KafkaConnection  # noqa: E402

OUT = REPO / "bench" / "results"
RUN_PREFIX = "bench_bridge_"  # then the run's id: its topics, logs and MirrorMaker 2 aliases
BRIDGE_ENV: dict[str, str] = {}  # --bridge-env KEY=VALUE: settings to try (e.g. BRIDGE_LINGER_MS=1)


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def bridge(partitions: int, replicas: int = 1, bare: bool = False) -> Copier:
    """``python -m bridge`` with its defaults (plus ``--bridge-env``), ``replicas`` processes of one
    group; ``bare``: :mod:`bench.peers.bridge_bare` instead (no per-record work: an upper bound)."""
    ports = [free_port() for _ in range(replicas)]

    def start(topic: str, tag: str) -> tuple[list[subprocess.Popen[bytes]], str]:
        return [start_one(topic, tag, port) for port in ports], f"{tag}.bridge"

    def start_one(topic: str, tag: str, port: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "BRIDGE_REMOTE_TOPIC": topic,
            "BRIDGE_LOCAL_TOPIC": f"{tag}.bridge",
            "BRIDGE_DLQ_TOPIC": f"{tag}.bridge.dlq",
            "BRIDGE_OFFSETS_TOPIC": f"{tag}.bridge.offsets",
            "BRIDGE_GROUP_ID": f"{tag}.bridge",
            "BRIDGE_LOCAL_PARTITIONS": str(partitions),
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(port),
            "PYTHONPATH": f"{REPO}:{REPO / 'services' / 'bridge'}",
            **BRIDGE_ENV,
        }
        module = "bench.peers.bridge_bare" if bare else "bridge"
        return spawn([sys.executable, "-m", module], OUT / f"{tag}.bridge.log", env, REPO)

    name = "bridge (exactly once)" if replicas == 1 else f"bridge (exactly once) x{replicas} processes"
    if bare:
        name = "bridge without per-record work (upper bound)"
    return Copier(name, start, bridge_source_key, bridge_target_key, port=ports[0])


def mirrormaker(remote: KafkaConnection, local: KafkaConnection, partitions: int, eos: bool) -> Copier:
    """A dedicated MirrorMaker 2 per run (its own cluster aliases, so no state carries over)."""

    def start(topic: str, tag: str) -> tuple[list[subprocess.Popen[bytes]], str]:
        alias = tag.removeprefix(RUN_PREFIX)  # the run's id and the copier's place: unique, so its topics can be dropped
        src, dst = f"src{alias}", f"dst{alias}"
        props = OUT / f"{tag}.mm2.properties"
        props.write_text(mm2_properties(remote, local, src, dst, topic, partitions, eos))
        props.chmod(0o600)  # holds the SASL passwords; removed once MirrorMaker 2 has read it
        proc = spawn(mm2_argv(props, dst, OUT), OUT / f"{tag}.mm2.log", os.environ.copy(), OUT)
        threading.Timer(60, props.unlink, kwargs={"missing_ok": True}).start()
        return [proc], f"{src}.{topic}"

    mode = "exactly.once.source.support=enabled" if eos else "default, at least once"
    return Copier(f"MirrorMaker 2 ({mode})", start)


def raw_copier(partitions: int, in_flight: int) -> Copier:
    """``bench/peers/raw_copier.py``: at least once, no transactions, the bridge's client settings."""

    def start(topic: str, tag: str) -> tuple[list[subprocess.Popen[bytes]], str]:
        target = f"{tag}.raw"
        argv = [sys.executable, "-m", "bench.peers.raw_copier", "--source-topic", topic, "--target-topic", target]
        argv += ["--group", f"{tag}.raw", "--partitions", str(partitions), "--in-flight", str(in_flight)]
        return [spawn(argv, OUT / f"{tag}.raw.log", {**os.environ, "PYTHONPATH": str(REPO)}, REPO)], target

    return Copier("raw aiokafka copier (at least once)", start)


def print_tables(runs: list[Run], latencies: dict[float, list[Run]]) -> None:
    print()
    print(f"| copier | events | total ev/s | steady ev/s | peak RSS MB |{' vs raw (steady) |' if runs else ''}")
    print(f"|---|---|---|---|---|{'---|' if runs else ''}")
    raw = next((r for r in runs if r.name.startswith("raw")), None)
    for run in runs:
        vs_raw = f" {run.steady_eps / raw.steady_eps:.0%} |" if raw and raw.steady_eps else ""
        print(f"| {run.name} | {run.events} | {run.total_eps:.0f} | {run.steady_eps:.0f} | {run.peak_rss_mb:.0f} |{vs_raw}")
    bridge_run = next((r for r in runs if r.name.startswith("bridge")), None)
    mm2 = next((r for r in runs if r.name.startswith("MirrorMaker")), None)
    if bridge_run and mm2 and mm2.steady_eps:
        print(
            f"bridge / MirrorMaker 2: total {bridge_run.total_eps / mm2.total_eps:.2f}x, steady {bridge_run.steady_eps / mm2.steady_eps:.2f}x"
        )
    if latencies:
        print()
        print("| rate ev/s | copier | p50 ms | p99 ms | max ms | received | peak RSS MB |")
        print("|---|---|---|---|---|---|---|")
        for rate, rate_runs in latencies.items():
            for run in rate_runs:
                q = run.latency()
                print(
                    f"| {rate:.0f} | {run.name} | {q['p50_ms']:.0f} | {q['p99_ms']:.0f} | {q['max_ms']:.0f} | {run.note} | {run.peak_rss_mb:.0f} |"
                )
    for rate_runs in latencies.values():
        for run in rate_runs:
            if run.profile:
                print(f"  bridge's own timings at {run.events} events (ms; p50/p99 are histogram bucket bounds):")
                for name, p in run.profile.items():
                    print(
                        f"    {name:22} n={p['count']:>6.0f} mean {p['mean_ms']:>7.1f} p50 <= {p['p50_ms']:>6.0f} p99 <= {p['p99_ms']:>6.0f}"
                    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-rates", default="2000,5000", help="comma list of produce rates (events/s); empty: no latency runs")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--mm2-mode", choices=("eos", "default", "skip"), default="eos")
    parser.add_argument(
        "--copiers",
        default="bridge,mm2,raw",
        help="which copiers run, in this order (bridge, bridge2 = two bridge processes, bridge-bare = the bridge without per-record work, mm2, raw)",
    )
    parser.add_argument("--raw-in-flight", type=int, default=16, help="the raw copier's unacknowledged fetches (2000 records each)")
    parser.add_argument("--latency-copiers", default="bridge,mm2,raw", help="which copiers the latency runs measure")
    parser.add_argument("--latency-only", action="store_true", help="only the fixed-rate latency runs (no throughput runs)")
    parser.add_argument("--bridge-env", action="append", default=[], metavar="KEY=VALUE", help="a bridge setting to try (repeatable)")
    args = parser.parse_args()
    BRIDGE_ENV.update(dict(kv.split("=", 1) for kv in args.bridge_env))
    load_stack_env()
    from shared.settings import local_kafka_from_env, remote_kafka_from_env

    remote, local = remote_kafka_from_env(), local_kafka_from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    base = f"{RUN_PREFIX}{run_id}"
    try:
        await compare(args, remote, local, base)
    finally:  # also when stopped (run_cleaning_up): the run's topics cost the brokers CPU while they stay
        dropped = await drop_topics([remote, local], lambda name: name.startswith(base) or f"src{run_id}" in name or f"dst{run_id}" in name)
        print(f"dropped the run's {len(dropped)} topics", flush=True)


async def compare(args: argparse.Namespace, remote: KafkaConnection, local: KafkaConnection, base: str) -> None:
    """The throughput runs, then the latency runs, of every copier asked for; prints the tables
    and writes ``bench/results/bridge_vs_mirrormaker.json``."""
    make = {
        "bridge": lambda: bridge(args.partitions),
        "bridge2": lambda: bridge(args.partitions, replicas=2),
        "bridge-bare": lambda: bridge(args.partitions, bare=True),
        "mm2": lambda: mirrormaker(remote, local, args.partitions, eos=args.mm2_mode == "eos"),
        "raw": lambda: raw_copier(args.partitions, args.raw_in_flight),
    }
    names = [n for n in args.copiers.split(",") if n and not (n == "mm2" and args.mm2_mode == "skip")]
    load_before = loadavg()
    print(f"{base}: copiers {names}, {args.events} events, {args.partitions} partitions, load {load_before}", flush=True)
    runs: list[Run] = []
    failures: list[str] = []
    if not args.latency_only:
        topic = f"{base}.source"
        t0 = time.monotonic()
        manifest = await eventgen.produce(
            eventgen.generate(args.events, seed=42), remote, topic, progress=False, partitions=args.partitions
        )
        print(f"produced {manifest.total} events to {topic} in {time.monotonic() - t0:.0f}s", flush=True)
        for i, name in enumerate(names):
            copier = make[name]()
            try:
                runs.append(await throughput(copier, local, topic, args.events, f"{base}t{i}"))
                print(f"{copier.name}: {runs[-1].total_eps:.0f} ev/s total, {runs[-1].steady_eps:.0f} steady, load {loadavg()}", flush=True)
            except RuntimeError as exc:
                failures.append(f"{copier.name} throughput failed: {exc}; see {OUT}/{base}t{i}.*.log")
                print(failures[-1], flush=True)
    latencies: dict[float, list[Run]] = {}
    for rate in [float(r) for r in args.latency_rates.split(",") if r]:
        for i, name in enumerate(n for n in args.latency_copiers.split(",") if n in names or n == "bridge"):
            copier, tag = make[name](), f"{base}r{rate:.0f}c{i}"
            try:
                run = await latency(copier, remote, local, f"{tag}.latency", tag, rate, int(rate * args.latency_seconds), args.partitions)
            except RuntimeError as exc:
                failures.append(f"{copier.name} latency at {rate:.0f}/s failed: {exc}; see {OUT}/{tag}.*.log")
                print(failures[-1], flush=True)
                continue
            latencies.setdefault(rate, []).append(run)
            q = run.latency()
            print(
                f"{copier.name} at {rate:.0f} ev/s: p50 {q['p50_ms']:.0f} p99 {q['p99_ms']:.0f} max {q['max_ms']:.0f} ms, load {loadavg()}",
                flush=True,
            )

    print_tables(runs, latencies)
    print(*failures, sep="\n")
    print(f"load average before {load_before}, after {loadavg()}; bridge settings {BRIDGE_ENV or 'default'}")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "partitions": args.partitions,
        "runs": [{**asdict(r), "total_eps": r.total_eps, "latencies_ms": None} for r in runs],
        "latency": [
            {"rate": rate, "copier": r.name, **r.latency(), "note": r.note, "peak_rss_mb": r.peak_rss_mb, "profile": r.profile}
            for rate, rate_runs in latencies.items()
            for r in rate_runs
        ],
        "bridge_env": BRIDGE_ENV,
        "failures": failures,
        "load_average": {"before": load_before, "after": loadavg()},
    }
    (OUT / "bridge_vs_mirrormaker.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    run_cleaning_up(main())
