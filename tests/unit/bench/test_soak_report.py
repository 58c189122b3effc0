"""The soak's report: per kind, and the faults whose services were slow to be ready again named
with what the last wait was for (the service and its own ``/ready`` reason)."""

from __future__ import annotations

from bench.soak.faults import FaultRecord
from bench.soak.report import as_json, table
from bench.soak.runner import Options, Result


def record(index: int, kind: str, ready_after_s: float, waited_for: dict[str, str]) -> FaultRecord:
    r = FaultRecord(index, kind, target=kind.split("-")[-1], injected_at=1000.0 + index, healed_at=1010.0 + index)
    r.ready_at = r.healed_at + ready_after_s if r.healed_at is not None else None
    r.recovered_at = r.ready_at
    r.waited_for = waited_for
    return r


def test_slow_faults_name_the_service_and_its_reason() -> None:
    result = Result(Options(minutes=1, rate=10), "soak_x", 1000.0)
    result.faults = [
        record(0, "kill-sink", 4.0, {"sink": "503 mongodb: starting"}),
        record(1, "stop-remote", 61.5, {"bridge": "503 remote cluster does not answer"}),
        record(2, "kill-live", 31.0, {}),
    ]
    data = as_json(result)
    assert [f["waited_for"] for f in data["fault_log"]] == [
        {"sink": "503 mongodb: starting"},
        {"bridge": "503 remote cluster does not answer"},
        {},
    ]
    lines = list(table(data))
    slow = lines[lines.index("Ready again after more than 30 s, and what the last wait was for:") + 1 :]
    assert slow[0] == "- fault 2 (stop-remote, remote): 61.5 s, bridge: 503 remote cluster does not answer"
    assert slow[1] == ""  # kill-live: slow, but nothing was seen waiting (no line), kill-sink: fast
    assert [k["kind"] for k in data["per_kind"]] == ["kill-live", "kill-sink", "stop-remote"]
    assert [k["ready_s"]["max"] for k in data["per_kind"]] == [31.0, 4.0, 61.5]
