"""The metrics contract without a running service: docs/operations.md "Metrics" is the list of what
the services expose; every documented name follows the conventions (shared.metrics), and every
metric the Grafana dashboard and the Prometheus alert rules query is documented. The Prometheus
and Grafana files are checked for structure here; promtool checks the Prometheus files and runs
the alert rules' unit tests in tests/unit/deploy/test_promtool.py. The integration test
tests/integration/test_metrics_scrape.py holds the running services to the same list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.metrics import convention_problems
from tests.unit.deploy.conftest import REPO

OPERATIONS = REPO / "docs/operations.md"
PROMETHEUS_DIR = REPO / "infra/compose/prometheus"
GRAFANA_DIR = REPO / "infra/compose/grafana"
DASHBOARD = GRAFANA_DIR / "dashboards/pipeline.json"
SERVICES = ("bridge", "sink", "etl-api", "live")
TYPES = {"counter", "gauge", "histogram"}
# Prometheus' own per-target series: not exposed by a service.
SYNTHETIC = {"up"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
DURATION = re.compile(r"^(0|(\d+[smhdwy])+)$")


def metrics_section() -> str:
    text = OPERATIONS.read_text()
    start = text.index("\n## Metrics\n")
    return text[start : text.index("\n## ", start + 1)]


def documented() -> dict[str, dict[str, Any]]:
    """``{exposed name: {type, labels, services}}`` from the section's metrics table."""
    rows = {}
    for line in metrics_section().splitlines():
        m = re.match(r"^\| `([a-z_:]+)` \| (\w+) \|\s*([^|]*?)\s*\|\s*([^|]+?)\s*\| [^|]+ \|$", line)
        if m:
            name, kind, labels, services = m.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = {
                "type": kind,
                "labels": re.findall(r"`(\w+)`(?: \(|,|$| )", labels.strip()) if labels.strip() else [],
                "services": [s.strip() for s in services.split(",")],
            }
    return rows


def documented_alerts() -> list[str]:
    return re.findall(r"^\| `([A-Z][A-Za-z]+)` \|", metrics_section(), flags=re.M)


def family(sample: str, docs: dict[str, dict[str, Any]]) -> str | None:
    """The documented name a PromQL series name belongs to (``x_bucket`` → histogram ``x``)."""
    if sample in docs:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and docs.get(base, {}).get("type") == "histogram":
            return base
    return None


def promql_metrics(expr: str) -> set[str]:
    """Series names an expression selects: identifiers that are not functions, keywords, label
    names (inside ``{}`` or ``by (…)``), ranges, strings or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+e\d+", word):
            continue
        names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    model = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in model["groups"] for rule in group["rules"]]


# ---------------------------------------------------------------- the documented list


def test_every_documented_metric_follows_the_conventions() -> None:
    docs = documented()
    assert len(docs) == 65  # the table in docs/operations.md, counted by hand
    for name, row in docs.items():
        assert row["type"] in TYPES, (name, row["type"])
        assert convention_problems(name, row["type"]) == [], name
        assert name.endswith("_total") == (row["type"] == "counter"), f"{name}: _total on counters, only on counters"
        assert set(row["services"]) <= set(SERVICES), (name, row["services"])
        owner = name.split("_", 1)[0]
        if owner in ("bridge", "sink", "live"):
            assert row["services"] == [owner], name
        if owner == "etl":
            assert row["services"] == ["etl-api"], name
    defaults = [n for n in docs if n.startswith(("process_", "python_"))] + ["pipeline_service_ready"]
    assert all(docs[n]["services"] == list(SERVICES) for n in defaults)
    assert docs["pipeline_dead_lettered_records_total"]["services"] == ["bridge", "sink"]
    assert docs["pipeline_dead_lettered_records_total"]["labels"] == ["hop", "stage"]
    assert docs["etl_run_duration_seconds"] == {"type": "histogram", "labels": ["mode", "outcome"], "services": ["etl-api"]}


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("sink_lag_records_total", "gauge", "a gauge must not end"),
        ("bridge_consumed", "counter", "no unit or counted thing"),
        ("bridge_lag", "gauge", "no unit or counted thing"),
        ("sink_batch_seconds_count", "histogram", "must not end in _total"),
        ("etl_run_duration_ms", "histogram", "not a base unit"),
        ("etl_seconds_last_run", "gauge", "the base unit 'seconds' must be the last word"),
        ("etl_last_success_timestamp", "gauge", "*_timestamp_seconds"),
        ("BridgeLag_records", "gauge", "not snake_case"),
        ("lag_records", "gauge", "no known prefix"),
        ("sink_thing_total_total", "counter", "named without _total in code"),
    ],
)
def test_the_convention_check_refuses_the_old_mistakes(name: str, kind: str, problem: str) -> None:
    problems = convention_problems(name, kind)
    assert any(problem in p for p in problems), problems


def test_the_old_names_are_gone_from_docs_tests_and_code() -> None:
    old = re.compile(
        r"\b(bridge_consumed_total|bridge_produced_total|bridge_dead_lettered(_by_stage)?_total|bridge_lag\{|bridge_lag\b(?!_)"
        r"|sink_lag_records_total|sink_dead_lettered_records|sink_conflicting_duplicates_total)"
    )
    roots = ["docs", "services", "shared", "tests", "bench", "airflow", "infra", "README.md"]
    hits = []
    for root in roots:
        path = REPO / root
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in {".py", ".md", ".json", ".yml"}]
        for f in files:
            if f == Path(__file__) or "results" in f.parts:
                continue
            hits += [f"{f.relative_to(REPO)}: {m.group(0)}" for m in old.finditer(f.read_text(errors="replace"))]
    assert hits == []


# ---------------------------------------------------------------- dashboard and alert rules


def test_promql_names_are_extracted_exactly() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(sink_batch_latency_seconds_bucket{stage="x"}[$__rate_interval]))) / 1e9'
    assert promql_metrics(expr) == {"sink_batch_latency_seconds_bucket"}
    expr = "max(etl_watermark_age_seconds) > 7200 or max(time() - etl_last_success_timestamp_seconds) > 7200"
    assert promql_metrics(expr) == {"etl_watermark_age_seconds", "etl_last_success_timestamp_seconds"}
    assert promql_metrics('sum by (hop, stage) (increase(pipeline_dead_lettered_records_total[5m])) > 0 and on (hop) up{job="a"}') == {
        "pipeline_dead_lettered_records_total",
        "up",
    }


def test_every_metric_the_dashboard_and_the_rules_query_is_documented() -> None:
    docs = documented()
    queried = {name for expr in [*dashboard_exprs(), *(r["expr"] for r in alert_rules())] for name in promql_metrics(expr)}
    unknown = {n for n in queried if n not in SYNTHETIC and family(n, docs) is None}
    assert unknown == set()
    families = {family(n, docs) for n in queried} - {None}
    # what the issue asks the dashboard and the rules to show
    must = {
        "bridge_consumed_records_total",
        "sink_written_documents_total",
        "bridge_lag_records",
        "sink_lag_records",
        "pipeline_dead_lettered_records_total",
        "sink_batch_latency_seconds",
        "etl_watermark_age_seconds",
        "etl_last_success_timestamp_seconds",
        "etl_run_duration_seconds",
        "etl_run_events_read",
        "etl_runs_finished_total",
        "pipeline_service_ready",
    }
    assert must <= families, must - families


def test_the_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert (dash["uid"], dash["title"]) == ("product-pipeline", "Product-view pipeline")
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasource] == [("prometheus", "prometheus", "http://prometheus:9090")]
    titles = set()
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        titles.add(p["title"])
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == p["datasource"] and t["expr"].strip() for t in p["targets"]), p["title"]
    assert {"Throughput per hop", "Lag", "Dead letters by hop and stage", "Write latency", "Watermark age", "Run history"} <= titles
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/pipeline.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/etc/grafana/dashboards"]


def test_alert_rules_are_well_formed_and_documented() -> None:
    model = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    assert set(model) == {"groups"}
    group_names = [g["name"] for g in model["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in model["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"], group["name"]
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert promql_metrics(rule["expr"]), rule["alert"]
    assert sorted(names) == sorted(documented_alerts())
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "pipeline_dead_lettered_records_total" in by_name["DeadLettersWritten"]
    assert "up{" in by_name["PipelineServiceDown"] and "pipeline_service_ready == 0" in by_name["PipelineServiceNotReady"]
    assert "etl_watermark_age_seconds" in by_name["EtlStale"]
    assert "bridge_lag_records" in by_name["BridgeLagGrowing"] and "sink_lag_records" in by_name["SinkLagGrowing"]


def test_prometheus_scrapes_every_service_and_its_replicas(resolved_monitoring: dict[str, Any]) -> None:
    from tests.unit.deploy.envspec import load_settings, settings_env_vars

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    port_var = {"bridge": "BRIDGE_HTTP_PORT", "sink": "SINK_HTTP_PORT", "etl-api": "ETL_PORT", "live": "LIVE_HTTP_PORT"}
    settings = load_settings()
    for service in SERVICES:
        port = int({v.name: v.default for v in settings_env_vars(settings[service])}[port_var[service]])
        # an A lookup of the compose service name answers with every replica
        assert jobs[service]["dns_sd_configs"] == [{"names": [service], "type": "A", "port": port, "refresh_interval": "30s"}]
        assert service in resolved_monitoring["services"]
    mounts = {v["target"]: v for v in resolved_monitoring["services"]["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus"]["source"]).resolve() == PROMETHEUS_DIR and mounts["/etc/prometheus"]["read_only"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in resolved_monitoring["services"]["prometheus"]["command"]


def test_the_registries_the_services_build_expose_exactly_the_documented_names() -> None:
    """Without a broker: the registry each service builds (ServiceState's for bridge and sink,
    EtlMetrics' for etl-api) against the documented list; the integration test scrapes the
    running processes."""
    from bridge.metrics import BridgeMetrics
    from etl_api.metrics import EtlMetrics
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from sink.metrics import SinkMetrics

    from shared.service import ServiceState

    bridge, sink = ServiceState("bridge"), ServiceState("sink")
    BridgeMetrics.create(bridge.registry)
    SinkMetrics(sink.registry)
    registries = {"bridge": bridge.registry, "sink": sink.registry, "etl-api": EtlMetrics().registry}
    docs = documented()
    for service, registry in registries.items():
        exposed = {}
        for fam in text_string_to_metric_families(generate_latest(registry).decode()):
            assert convention_problems(fam.name, fam.type) == [], (service, fam.name)
            exposed[f"{fam.name}_total" if fam.type == "counter" else fam.name] = fam.type
        assert exposed == {name: row["type"] for name, row in docs.items() if service in row["services"]}, service


def test_the_docs_name_counters_as_exposed() -> None:
    """A counter mentioned in the docs without its ``_total`` is a query that returns nothing."""
    counters = [name.removesuffix("_total") for name, row in documented().items() if row["type"] == "counter"]
    mention = re.compile(r"`(" + "|".join(map(re.escape, counters)) + r")(\{[^`]*\})?`")
    docs = [*(REPO / "docs").glob("*.md"), *(REPO / "services").glob("*/README.md"), REPO / "README.md", REPO / "bench/README.md"]
    hits = [f"{f.relative_to(REPO)}: {m.group(0)}" for f in docs for m in mention.finditer(f.read_text())]
    assert hits == []
