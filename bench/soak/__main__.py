"""``python -m bench.soak``: one fault soak on the local stack (``./pipeline stack up`` first).

    .venv/bin/python -m bench.soak [--minutes 60] [--rate 1000] [--fault-every 60] [--faults N]
        [--kinds kill-bridge,broker-local,…] [--seed 28] [--bad-fraction 0.001] [--time-scale 0.1]
        [--out bench/results/soak.json] [--keep] [--live-retention 20]

Prints each fault as it happens, then the table of faults by kind, the totals and the RSS; writes
``--out``. Exits 0 only when every check holds, every fault recovered and every expected alert
fired and resolved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.probes import run_cleaning_up
from bench.soak.faults import KINDS
from bench.soak.report import as_json, table
from bench.soak.runner import Options, run_soak
from infra.stack import load_env

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str] | None) -> tuple[Options, Path]:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second to the remote topic")
    ap.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults (± 20 %% jitter)")
    ap.add_argument("--faults", type=int, default=None, help="how many faults (default: as many as fit)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds (bench/soak/faults.py)")
    ap.add_argument("--seed", type=int, default=28)
    ap.add_argument("--bad-fraction", type=float, default=0.001)
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds of traffic before the first fault")
    ap.add_argument("--time-scale", type=float, default=0.1, help="the alert rules' durations times this")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    ap.add_argument("--keep", action="store_true", help="keep the soak's topics, database and schema")
    ap.add_argument(
        "--live-retention", type=float, default=20.0, help="live's retention in minutes (0: its default, 2 hours); RSS compared after it"
    )
    ns = ap.parse_args(argv)
    kinds = tuple(k for k in ns.kinds.split(",") if k)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        ap.error(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    opts = Options(
        minutes=ns.minutes,
        rate=ns.rate,
        fault_every_s=ns.fault_every,
        faults=ns.faults,
        kinds=kinds,
        seed=ns.seed,
        bad_fraction=ns.bad_fraction,
        warmup_s=ns.warmup,
        time_scale=ns.time_scale,
        keep=ns.keep,
        live_retention_s=int(ns.live_retention * 60) or None,
    )
    return opts, ns.out


def passed(data: dict[str, object]) -> bool:
    kinds = data["per_kind"]
    assert isinstance(kinds, list)
    return (
        bool(data["checks_ok"])
        and data["lost"] == 0
        and data["duplicated"] == 0
        and bool(data["drained"])
        and data["alerts_fired"] == data["alerts_expected"] == data["alerts_resolved"]
        and all(k["not_recovered"] == 0 and not k["errors"] for k in kinds)
        and not data["unexpected_exits"]
    )


def main(argv: list[str] | None = None) -> int:
    opts, out = parse(argv)
    load_env()
    result = run_cleaning_up(run_soak(opts))
    data = as_json(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print("\n".join(table(data)))
    for check in data["checks"]:
        if not check["ok"]:
            print(f"FAILED {check['name']}: {json.dumps(check)[:2000]}", file=sys.stderr)
    print(f"wrote {out}")
    return 0 if passed(data) else 1


if __name__ == "__main__":
    sys.exit(main())
