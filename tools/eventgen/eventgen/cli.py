"""``python -m eventgen``: generate events and produce them to the remote topic (or just time them).

Connection settings come from the environment (``REMOTE_KAFKA_*`` / ``LOCAL_KAFKA_*``, as every
service reads them). Variables that are not set are filled from ``--env-file``, by default the
local stack's ``stack.env`` when it exists, so a developer on the stack needs no exports.
Prints one JSON summary line on stdout; the progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from eventgen.generate import DEFAULT_DAYS, DEFAULT_START, generate, plan_counts
from eventgen.now import stamp_now
from eventgen.produce import produce
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import local_kafka_from_env, remote_kafka_from_env

log = logging.getLogger("eventgen")

_REPO = Path(__file__).resolve().parents[3]
DEFAULT_ENV_FILE = Path(os.environ.get("STACK_HOME", _REPO / ".stack")) / "stack.env"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be within [0, 1]")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eventgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=10_000, help="records to produce (default 10000)")
    p.add_argument("--seed", type=int, default=42, help="random seed: same arguments → byte-identical records (default 42)")
    p.add_argument("--topic", default="product_views", help="topic (default product_views)")
    p.add_argument("--bad-fraction", type=_fraction, default=0.0, help="share of malformed records, split evenly over the bad kinds")
    p.add_argument("--seed-shape-fraction", type=_fraction, default=0.1, help="share of valid records in the seed's simplified shape")
    p.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first day of event times, UTC (default 2020-06-01)")
    p.add_argument("--days", type=_positive_int, default=DEFAULT_DAYS, help="days the event times span (default 3)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second, 0 = as fast as possible")
    p.add_argument(
        "--now",
        action="store_true",
        help="event times = the wall clock as each record is produced (--start/--days ignored); with --rate: a live stream",
    )
    p.add_argument("--partitions", type=_positive_int, default=6, help="partitions if the topic is created (default 6)")
    p.add_argument("--replication-factor", type=_positive_int, default=1, help="replication factor if the topic is created (default 1)")
    p.add_argument("--cluster", choices=("remote", "local"), default="remote", help="REMOTE_KAFKA_* (default) or LOCAL_KAFKA_*")
    p.add_argument("--manifest", type=Path, help="write the manifest (JSON) here")
    p.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help="KEY=VALUE file filling unset variables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="only generate (and time) the records; no Kafka")
    return p


def load_env_file(path: Path) -> None:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value)


def generator_args(ns: argparse.Namespace) -> dict[str, Any]:
    return {
        "count": ns.count,
        "seed": ns.seed,
        "bad_fraction": ns.bad_fraction,
        "seed_shape_fraction": ns.seed_shape_fraction,
        "start": ns.start.isoformat(),
        "days": ns.days,
    } | ({"now": True} if ns.now else {})


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    setup_logging("eventgen")
    if ns.count < 0:
        log.error("--count must be >= 0")
        return 2
    args = generator_args(ns)
    records = generate(
        ns.count, seed=ns.seed, bad_fraction=ns.bad_fraction, seed_shape_fraction=ns.seed_shape_fraction, start=ns.start, days=ns.days
    )
    if ns.now:
        records = stamp_now(records)
    began, began_cpu = time.perf_counter(), time.process_time()
    summary: dict[str, Any] = {"args": args}
    if ns.dry_run:
        size = 0
        for record in records:
            size += len(record.value)
        counts = plan_counts(ns.count, ns.bad_fraction, ns.seed_shape_fraction)
        summary |= {"topic": None, "total": ns.count, "counts": counts, "bytes": size}
    else:
        load_env_file(ns.env_file)
        try:
            conn = remote_kafka_from_env() if ns.cluster == "remote" else local_kafka_from_env()
        except ConfigError as exc:  # e.g. credentials without *_KAFKA_SECURITY_PROTOCOL
            log.error("%s", exc)
            return 2
        log.info("producing %d records to %s on %s", ns.count, ns.topic, conn.masked())
        manifest = asyncio.run(
            produce(
                records,
                conn,
                ns.topic,
                rate=ns.rate,
                progress=not ns.no_progress,
                partitions=ns.partitions,
                replication_factor=ns.replication_factor,
                total=ns.count,
                args=args,
            )
        )
        if ns.manifest:
            manifest.write(ns.manifest)
        summary |= {"topic": ns.topic, "total": manifest.total, "counts": manifest.counts}
        summary["manifest"] = str(ns.manifest) if ns.manifest else None
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - began_cpu
    summary |= {
        "seconds": round(seconds, 3),
        "events_per_s": round(ns.count / seconds) if seconds else None,
        "cpu_seconds": round(cpu_seconds, 3),  # this process only: robust on a busy machine
        "events_per_cpu_s": round(ns.count / cpu_seconds) if cpu_seconds else None,
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0
