"""The one metrics convention of every service (docs/operations.md "Metrics" lists what is exposed).

- :func:`service_registry`: a service's own registry with prometheus_client's default
  collectors, so every ``/metrics`` also answers ``process_*`` (CPU, memory, open fds, start
  time) and ``python_*`` (interpreter, gc) like any Python service an operator already scrapes.
- :func:`ready_gauge`: ``pipeline_service_ready`` (0/1), the readiness ``GET /ready`` answers.
- :class:`DeadLetters`: ``pipeline_dead_lettered_records_total{hop, stage}``, the same name in
  every hop that dead-letters (bridge, sink), every known stage present at 0 from the start (so
  ``increase()`` sees the first dead letter and a dashboard shows every stage).
- :func:`convention_problems`: the naming rules the tests hold every exposed name to.

Names follow Prometheus' conventions: ``snake_case``, prefixed by the hop (``bridge_``,
``sink_``, ``etl_``, ``live_``; ``pipeline_`` for a metric every hop shares), a base unit or the
counted thing as the last word (``_seconds``, ``_bytes``, ``_records``, ``_documents`` …),
``_total`` only on counters (prometheus_client appends it: the code names a counter without it,
the docs and PromQL with it), ``_timestamp_seconds`` for a point in time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

READY = "pipeline_service_ready"
"""Gauge, 1 while the service's ``GET /ready`` would answer 200, else 0 (what the NotReady alert reads)."""

DEAD_LETTERED = "pipeline_dead_lettered_records"
"""Counter name in code; exposed and documented as ``pipeline_dead_lettered_records_total``."""

PREFIXES = ("bridge_", "sink_", "etl_", "live_", "pipeline_", "process_", "python_")
"""Every exposed name starts with one: the hop's, the shared one, or the default collectors'."""

UNITS = frozenset(
    {
        # base units
        "seconds",
        "bytes",
        "ratio",
        "info",
        # counted things
        "records",
        "documents",
        "events",
        "views",
        "partitions",
        "hours",
        "transactions",
        "batches",
        "commits",
        "failures",
        "retries",
        "rebalances",
        "restarts",
        "resets",
        "resumes",
        "runs",
        "processes",
        "offset",
    }
)
"""Every name holds one word of these: a base unit (then as its last word, before ``_total``) or
the thing counted (``etl_runs_started_total``). ``process_*``/``python_*`` are prometheus_client's
and exempt."""
BASE_UNITS = frozenset({"seconds", "bytes", "ratio"})
BOOLEANS = frozenset({"ready"})
"""A gauge whose last word is one of these is 0 or 1 (like Prometheus' own ``up``)."""

_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_FORBIDDEN_UNITS = re.compile(r"_(ms|milliseconds|millis|us|microseconds|minutes|hours_total|kb|mb|kilobytes|megabytes|percent)(_|$)")
_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_gcount", "_gsum")


def service_registry() -> CollectorRegistry:
    """A new registry with the process, platform and gc collectors registered on it.

    Also turns off prometheus_client's ``*_created`` samples for the process: in the Prometheus
    text format each is one more gauge series per counter/histogram child, which nothing here
    queries and which a name check would have to explain away."""
    disable_created_metrics()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def ready_gauge(registry: CollectorRegistry) -> Gauge:
    """``pipeline_service_ready`` on ``registry`` (set it, or give it a function)."""
    return Gauge(READY, "1 while GET /ready answers 200 (connected, not backing off), else 0", registry=registry)


class DeadLetters:
    """``pipeline_dead_lettered_records_total{hop, stage}`` bound to one hop: ``labels(stage)``
    is the hop's child for that ``dlq.stage`` header value."""

    def __init__(self, registry: CollectorRegistry, hop: str, stages: Iterable[str]) -> None:
        self.hop = hop
        self.counter = Counter(
            DEAD_LETTERED,
            "Records produced to a dead-letter topic (committed), by hop and dlq.stage",
            ["hop", "stage"],
            registry=registry,
        )
        for stage in stages:
            self.counter.labels(hop, stage)

    def labels(self, stage: str) -> Counter:
        return self.counter.labels(self.hop, stage)


def convention_problems(family: str, kind: str) -> list[str]:
    """Why a metric family (the name without ``_total``, as ``text_string_to_metric_families``
    reports it, or as documented with ``_total`` for counters) breaks the convention; [] if not.
    ``kind``: counter | gauge | histogram | summary | info | untyped."""
    name = family.removesuffix("_total") if kind == "counter" else family
    problems = []
    if not _NAME.match(name):
        problems.append("not snake_case")
    if not name.startswith(PREFIXES):
        problems.append(f"no known prefix ({', '.join(PREFIXES)})")
    if kind == "gauge" and name.endswith(_SUFFIXES):
        problems.append("a gauge must not end in a counter/histogram suffix (_total, _sum, _count, _bucket …)")
    if kind in ("histogram", "summary") and name.endswith(_SUFFIXES):
        problems.append(f"a {kind} must not end in _total/_sum/_count/_bucket")
    if kind == "counter" and name.endswith(_SUFFIXES):
        problems.append("a counter is named without _total in code (prometheus_client appends it once)")
    if kind == "untyped":
        problems.append("untyped: declare a type")
    if _FORBIDDEN_UNITS.search(name):
        problems.append("not a base unit (seconds, bytes) or a plain count")
    words = name.split("_")
    if not name.startswith(("process_", "python_")):
        if not UNITS.intersection(words) and not (kind == "gauge" and words[-1] in BOOLEANS):
            problems.append(f"no unit or counted thing in the name ({', '.join(sorted(UNITS))})")
        for base in BASE_UNITS.intersection(words[:-1]):
            problems.append(f"the base unit {base!r} must be the last word")
    if "timestamp" in name and not name.endswith("_timestamp_seconds"):
        problems.append("a point in time is *_timestamp_seconds")
    return problems
