"""infra/prometheus.py's renderers: the compose scrape config for local targets and the alert rules
at a time scale, checked by Prometheus' own promtool (Debian's ``prometheus`` package, which
``./pipeline setup`` installs: without it these tests fail, never skip), and its reading of
``ALERTS`` back into firing intervals. Expected durations are computed here, not by the module."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.prometheus import CONFIG, RULES, format_duration, intervals_of, parse_duration, render_config, render_rules, scale_expr

JOBS = ["bridge", "sink", "etl-api", "live", "prometheus"]
TARGETS = {
    "bridge": ["127.0.0.1:8101", "127.0.0.1:8111"],
    "sink": ["127.0.0.1:8102"],
    "etl-api": ["127.0.0.1:8103"],
    "live": ["127.0.0.1:8104", "127.0.0.1:8114", "127.0.0.1:8124"],
    "prometheus": ["127.0.0.1:9090"],
}
SECONDS = {"s": 1, "m": 60, "h": 3600}
# a range [5m] or a subquery [10m:1m]: the only brackets outside strings in alerts.yml
BRACKETS = re.compile(r"\[(\w+)(?::(\w*))?\]")


def seconds(text: str) -> float:
    """A duration of alerts.yml or of the rendering (units s, m, h, combined as in 1m30s)."""
    parts = re.findall(r"(\d+)([smh])", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return float(sum(int(n) * SECONDS[u] for n, u in parts))


def rules_of(text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def windows(expr: str) -> list[tuple[float, float | None]]:
    return [(seconds(r), seconds(s) if s else None) for r, s in BRACKETS.findall(expr)]


def promtool_run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)


# ------------------------------------------------------------------ rules


@pytest.mark.parametrize("scale", [0.1, 0.05, 1.0])
def test_the_scaled_rules_pass_promtool_check_rules(promtool: str, tmp_path: Path, scale: float) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(render_rules(scale))
    out = promtool_run(promtool, "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules_of(RULES.read_text()))} rules found" in out.stdout, out.stdout


@pytest.mark.parametrize("scale", [0.1, 0.05])
def test_for_and_every_window_are_scaled_and_nothing_else(scale: float) -> None:
    original, scaled = rules_of(RULES.read_text()), rules_of(render_rules(scale))
    assert [r["alert"] for r in scaled] == [r["alert"] for r in original]
    for before, after in zip(original, scaled, strict=True):
        assert seconds(after["for"]) == pytest.approx(seconds(before["for"]) * scale), before["alert"]
        want = [(round(r * scale, 3), round(s * scale, 3) if s is not None else None) for r, s in windows(before["expr"])]
        assert windows(after["expr"]) == want, before["alert"]
        # thresholds, matchers, functions: everything outside the brackets as written
        assert BRACKETS.sub("[]", after["expr"]) == BRACKETS.sub("[]", before["expr"]), before["alert"]
        assert {k: v for k, v in after.items() if k not in ("for", "expr")} == {k: v for k, v in before.items() if k not in ("for", "expr")}


def test_known_rules_at_a_tenth() -> None:
    """Worked by hand: 2m → 12s, 10m:1m → 1m:6s, 5m → 30s, 15m → 90s, 0m stays 0."""
    rules = {r["alert"]: r for r in rules_of(render_rules(0.1))}
    assert seconds(rules["PipelineServiceDown"]["for"]) == 12
    assert rules["PipelineServiceDown"]["expr"] == 'up{job=~"bridge|sink|etl-api|live"} == 0'
    assert windows(rules["BridgeLagGrowing"]["expr"]) == [(60, 6)] and seconds(rules["BridgeLagGrowing"]["for"]) == 60
    assert windows(rules["DeadLettersWritten"]["expr"]) == [(30, None)] and seconds(rules["DeadLettersWritten"]["for"]) == 0
    assert windows(rules["EtlRunFailed"]["expr"]) == [(90, None)]
    assert "> 7200" in rules["EtlStale"]["expr"] and "> 120" in rules["EtlStarSchemaBehind"]["expr"]  # ages: real seconds


def test_scale_one_passes_the_rules_own_unit_tests(promtool: str, tmp_path: Path) -> None:
    """alerts.test.yml (every alert firing and silent, at its exact times) run on the rendering."""
    (tmp_path / "alerts.yml").write_text(render_rules(1))
    shutil.copy(RULES.parent / "alerts.test.yml", tmp_path / "alerts.test.yml")
    out = promtool_run(promtool, "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_scale_one_is_the_file_as_written() -> None:
    original, rendered = rules_of(RULES.read_text()), rules_of(render_rules(1))
    for before, after in zip(original, rendered, strict=True):
        assert seconds(after["for"]) == seconds(before["for"])
        assert windows(after["expr"]) == windows(before["expr"])
        assert {**after, "for": None, "expr": None} == {**before, "for": None, "expr": None}


def test_scale_expr_leaves_strings_alone_and_refuses_offsets() -> None:
    expr = 'rate(x{path=~"/a[0-9]+", re="[5m]"}[5m]) + max_over_time(y[1h:30s]) + z[10m:]'
    assert scale_expr(expr, 0.5) == 'rate(x{path=~"/a[0-9]+", re="[5m]"}[2m30s]) + max_over_time(y[30m:15s]) + z[5m:]'
    with pytest.raises(ValueError, match="offset"):
        scale_expr("rate(x[5m] offset 1h)", 0.1)
    with pytest.raises(ValueError, match="time_scale"):
        render_rules(0)


def test_durations() -> None:
    cases = {"0s": 0, "12s": 12, "2m": 120, "1m30s": 90, "1h": 3600, "2h0m5s": 7205, "500ms": 0.5, "1d": 86400}
    for text, secs in cases.items():
        assert parse_duration(text) == secs
    assert [format_duration(s) for s in (0, 12, 120, 90, 3600, 7205, 0.5, 86400, 0.0004)] == [
        "0s",
        "12s",
        "2m",
        "1m30s",
        "1h",
        "2h5s",
        "500ms",
        "24h",
        "0s",
    ]
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


# ------------------------------------------------------------------ config


def test_the_config_scrapes_the_given_targets_under_the_compose_job_names(promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(render_rules(0.1))
    path = tmp_path / "prometheus.yml"
    path.write_text(render_config(TARGETS, rules_path=rules, scrape_interval_s=1, evaluation_interval_s=2))
    out = promtool_run(promtool, "check", "config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout and "SUCCESS: 13 rules found" in out.stdout, out.stdout

    rendered, compose = yaml.safe_load(path.read_text()), yaml.safe_load(CONFIG.read_text())
    assert [c["job_name"] for c in compose["scrape_configs"]] == JOBS
    assert [c["job_name"] for c in rendered["scrape_configs"]] == JOBS
    for config in rendered["scrape_configs"]:
        assert config == {"job_name": config["job_name"], "static_configs": [{"targets": TARGETS[config["job_name"]]}]}
    assert rendered["rule_files"] == [str(rules)]
    assert rendered["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "2s"}


def test_the_config_at_the_compose_intervals_keeps_its_timeout() -> None:
    rendered = yaml.safe_load(render_config({"sink": ["127.0.0.1:8102"]}, rules_path="/r.yml"))
    compose = yaml.safe_load(CONFIG.read_text())
    assert {k: seconds(v) for k, v in rendered["global"].items()} == {k: seconds(v) for k, v in compose["global"].items()}
    assert [c["job_name"] for c in rendered["scrape_configs"]] == ["sink"]  # jobs without targets left out


def test_an_unknown_job_is_refused() -> None:
    with pytest.raises(ValueError, match="no such job"):
        render_config({"sinks": ["127.0.0.1:8102"]}, rules_path="/r.yml")


# ------------------------------------------------------------------ ALERTS → intervals


def test_firing_intervals_from_a_query_range() -> None:
    def series(values: list[float], **labels: str) -> dict[str, Any]:
        return {"metric": {"__name__": "ALERTS", "alertstate": "firing", **labels}, "values": [[t, "1"] for t in values]}

    matrix = [
        # fired at 103, resolved after 106, fired again at 110 and still firing at the end (112)
        series([103, 104, 105, 106, 110, 111, 112], alertname="PipelineServiceDown", job="sink", instance="h:1", severity="critical"),
        series([100, 101], alertname="EtlRunFailed", severity="warning"),
    ]
    got = intervals_of(matrix, end=112.5, step=1)
    assert got == {
        ("PipelineServiceDown", (("instance", "h:1"), ("job", "sink"), ("severity", "critical"))): [[103, 107], [110, None]],
        ("EtlRunFailed", (("severity", "warning"),)): [[100, 102]],
    }
