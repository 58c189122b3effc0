"""``./pipeline dlq`` / ``python -m shared.dlqtool``: stats, show, export and replay dead letters.

Every command reads the dead-letter topic (``DLQ_TOPIC``, else ``SINK_DLQ_TOPIC`` /
``BRIDGE_DLQ_TOPIC``) to the end it had when the command began and applies the same filters.
Exit codes: 0 done, 1 a replay left letters refused again or parked, 2 bad arguments or settings,
3 a broker did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from shared.dlqtool import kafka_io
from shared.dlqtool.hops import validators
from shared.dlqtool.letters import Letter, Selection, SourceRange, iso_ms, letter_json, parse_time, stats_of
from shared.dlqtool.replay import Publish, plan_replay, summary_of
from shared.dlqtool.settings import DlqToolSettings
from shared.errors import PipelineError, is_retriable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline dlq", description="Count, read, export and replay dead letters.")
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "stats": "counts by hop, stage and error class, oldest and newest of each",
        "show": "the letters, decoded, with their dlq.* headers",
        "export": "the letters as JSON lines, for investigation",
        "replay": "letters back through the validation of the hop that refused them, exactly once in effect",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--hop", action="append", default=[], help="bridge or sink (repeatable)")
        sub.add_argument("--stage", action="append", default=[], help="exact dlq.stage, e.g. bridge.validate (repeatable)")
        sub.add_argument("--class", dest="classes", action="append", default=[], help="exact dlq.error.class (repeatable)")
        sub.add_argument("--since", help="dead-lettered at or after: ISO-8601 time or a duration back (24h, 7d)")
        sub.add_argument("--until", help="dead-lettered before: ISO-8601 time or a duration back")
        sub.add_argument("--source", action="append", default=[], help="TOPIC[:PARTITION[:OFFSET|FIRST-LAST]] (repeatable)")
        if name != "export":
            sub.add_argument("--json", action="store_true", help="one JSON document for scripts")
        if name == "show":
            sub.add_argument("--limit", type=int, default=20, help="at most this many letters, the newest (0: all)")
        if name == "replay":
            sub.add_argument("--dry-run", action="store_true", help="say what would happen, write nothing")
            sub.add_argument("--max-replays", type=int, help="park letters replayed this often already (DLQ_MAX_REPLAYS, 3)")
    return parser


def selection_of(args: argparse.Namespace, now: datetime) -> Selection:
    """The filters of the command line. Raises ``SelectionError``."""
    return Selection(
        hops=frozenset(args.hop),
        stages=frozenset(args.stage),
        classes=frozenset(args.classes),
        since_ms=parse_time(args.since, now) if args.since else None,
        until_ms=parse_time(args.until, now) if args.until else None,
        sources=tuple(SourceRange.parse(s) for s in args.source),
    )


def format_stats(letters: Sequence[Letter]) -> str:
    rows = stats_of(letters)
    if not rows:
        return "no dead letters selected"
    table = [("hop", "stage", "class", "count", "oldest", "newest")]
    table += [(r.hop, r.stage, r.error_class, str(r.count), iso_ms(r.oldest_ms), iso_ms(r.newest_ms)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    lines = [
        "  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in table
    ]
    lines.append(f"{sum(r.count for r in rows)} dead letters")
    return "\n".join(line.rstrip() for line in lines)


def format_letter(letter: Letter) -> str:
    doc = letter_json(letter)
    value = doc["value"]
    shown = orjson.dumps(value["json"]).decode() if "json" in value else repr(next(iter(value.values())))
    lines = [
        f"{doc['letter']}  {doc['dead_lettered_at']}  {letter.stage}  {letter.error_class}",
        f"  reason: {letter.message}",
        f"  source: {letter.source_topic}:{letter.source_partition}:{letter.source_offset}",
        f"  key:    {letter.key!r}",
        f"  value:  {shown[:2000]}",
    ]
    lines += [f"  {k}: {v}" for k, v in sorted(letter.dlq_headers.items())]
    lines += [f"  header {k}: {v!r}" for k, v in letter.headers]
    return "\n".join(lines)


def format_replay(summary: dict[str, Any], *, dry_run: bool, target: str) -> str:
    verb = "would replay" if dry_run else "replayed"
    lines = [
        f"{summary['selected']} letters selected; {verb} {summary['replayed']} to {target}",
        f"  refused again:   {summary['refused_again']}",
    ]
    lines += [f"    {r['count']:>5}  {r['stage']} {r['error_class']}: {r['message']}" for r in summary["refused_reasons"]]
    lines += [f"  already present: {summary['already_present']}", f"  parked:          {summary['parked']}"]
    return "\n".join(lines)


async def run(args: argparse.Namespace, settings: DlqToolSettings, out: TextIO, now: datetime) -> int:
    selection = selection_of(args, now)
    conn = settings.local_kafka
    letters = selection.select(await kafka_io.read_letters(conn, settings.topic, since_ms=selection.since_ms, timeout_s=settings.timeout_s))
    if args.command == "stats":
        rows = [r.as_json() for r in stats_of(letters)]
        out.write(
            (
                orjson.dumps({"topic": settings.topic, "total": len(letters), "classes": rows}).decode()
                if args.json
                else format_stats(letters)
            )
            + "\n"
        )
        return 0
    if args.command in ("show", "export"):
        shown = letters[-args.limit :] if args.command == "show" and args.limit else letters
        for letter in shown:
            as_json = args.command == "export" or args.json
            out.write((orjson.dumps(letter_json(letter)).decode() if as_json else format_letter(letter) + "\n") + "\n")
        return 0
    max_replays = args.max_replays or settings.max_replays
    ledger_topic = settings.ledger()
    ledger = await kafka_io.read_ledger(conn, ledger_topic, timeout_s=settings.timeout_s)
    steps = plan_replay(letters, ledger=ledger, validators=validators(now), max_replays=max_replays)
    to_publish = [s for s in steps if isinstance(s, Publish)]
    if to_publish and not args.dry_run:
        await kafka_io.ensure_ledger(conn, ledger_topic, replication_factor=settings.ledger_replication_factor)
        await kafka_io.publish(
            conn,
            to_publish,
            target_topic=settings.local_topic,
            ledger_topic=ledger_topic,
            transactional_id=settings.transactional_id,
            batch_records=settings.batch_records,
            timeout_s=settings.timeout_s,
        )
    summary = {"selected": len(letters), "dry_run": bool(args.dry_run), "target": settings.local_topic, **summary_of(steps)}
    out.write(
        (orjson.dumps(summary).decode() if args.json else format_replay(summary, dry_run=args.dry_run, target=settings.local_topic)) + "\n"
    )
    return 1 if summary["refused_again"] or summary["parked"] else 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = DlqToolSettings()
        return asyncio.run(run(args, settings, out, datetime.now(UTC)))
    except Exception as exc:
        if not isinstance(exc, PipelineError) and not is_retriable(exc):
            raise  # a bug: its traceback
        print(f"pipeline dlq: {exc or type(exc).__name__}", file=sys.stderr)
        return 3 if is_retriable(exc) else 2
