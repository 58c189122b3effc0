"""The Prometheus files checked by Prometheus' own tool: ``promtool check rules`` on alerts.yml,
``promtool test rules`` on its unit tests (infra/compose/prometheus/alerts.test.yml: every alert
fires in a case, with its labels and annotations, and stays silent in another) and ``promtool check
config`` on prometheus.yml. promtool comes with Debian's ``prometheus`` package, which
``./pipeline setup`` (and ``./pipeline test``) installs; without it these tests fail, they never
skip. That promtool is Prometheus 2.42 while compose runs 3.x: the test cases keep clear of what
changed between them (range selectors' left boundary), and the rules use nothing either lacks."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.deploy.conftest import REPO
from tests.unit.deploy.test_metrics_conventions import alert_rules, promql_metrics

PROMETHEUS_DIR = REPO / "infra/compose/prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
MOUNT = "/etc/prometheus"  # where docker-compose.yml mounts PROMETHEUS_DIR (read-only)


def rule_test_files() -> list[Path]:
    return sorted(PROMETHEUS_DIR.glob("*.test.yml"))


def run(*argv: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd=cwd, timeout=300)


def alert_names() -> list[str]:
    return [r["alert"] for r in alert_rules()]


def rule_tests() -> list[dict[str, Any]]:
    """Every test group of every test file, with its file's ``rule_files`` checked."""
    groups = []
    for path in rule_test_files():
        model = yaml.safe_load(path.read_text())
        assert [(path.parent / f).resolve() for f in model["rule_files"]] == [RULES], path.name
        groups += model["tests"]
    return groups


def test_the_rules_pass_promtool_check_rules(promtool: str) -> None:
    out = run(promtool, "check", "rules", RULES.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in out.stdout, out.stdout


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    files = rule_test_files()
    assert [f.name for f in files] == ["alerts.test.yml"]
    out = run(promtool, "test", "rules", *(f.name for f in files))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(files), out.stdout


def test_the_compose_config_passes_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    # prometheus.yml names its rule files by their path inside the container (/etc/prometheus is
    # this folder, mounted): the check runs on a copy whose rule_files point at the repo's files,
    # so that promtool also loads and checks the rules the config loads.
    config = yaml.safe_load(CONFIG.read_text())
    assert all(f.startswith(f"{MOUNT}/") for f in config["rule_files"]), config["rule_files"]
    config["rule_files"] = [str(PROMETHEUS_DIR / Path(f).relative_to(MOUNT)) for f in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    out = run(promtool, "check", "config", str(copy))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(config['rule_files'])} rule files found" in out.stdout, out.stdout
    assert f"SUCCESS: {len(alert_names())} rules found" in out.stdout, out.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """A new rule without a test fails here: each alert must fire in some case (exact labels and
    annotations: every expected alert carries both) and be asserted silent in another."""
    firing: set[str] = set()
    silent: set[str] = set()
    for group in rule_tests():
        for case in group.get("alert_rule_test", []):
            expected = case.get("exp_alerts") or []
            for alert in expected:
                assert alert.get("exp_labels", {}).get("severity"), (group["name"], case)
                assert alert.get("exp_annotations", {}).get("summary"), (group["name"], case)
                assert alert["exp_annotations"].get("description"), (group["name"], case)
            (firing if expected else silent).add(case["alertname"])
    names = set(alert_names())
    assert firing - names == set() and silent - names == set(), "tests of alerts that do not exist"
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - silent == set(), "alerts without a case where they stay silent"


def test_the_test_series_are_metrics_the_rules_query() -> None:
    """A misspelt input series would make a silent case pass for the wrong reason."""
    queried = set().union(*(promql_metrics(r["expr"]) for r in alert_rules()))
    used = {s["series"].split("{")[0].strip() for group in rule_tests() for s in group.get("input_series", [])}
    assert used - queried == set()
