"""docker-compose.yml's ``monitoring`` profile: Prometheus and Grafana only with it, their ports,
mounts and volumes (what they load: tests/unit/deploy/test_metrics_conventions.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.unit.deploy import test_compose
from tests.unit.deploy.conftest import REPO

services = test_compose.services


def test_monitoring_is_a_profile(
    resolved_compose: dict[str, Any], resolved_monitoring: dict[str, Any], raw_compose: dict[str, Any]
) -> None:
    monitoring = {"prometheus", "grafana"}
    assert not monitoring & set(services(resolved_compose))
    assert set(services(resolved_monitoring)) == set(services(resolved_compose)) | monitoring
    assert {n for n, svc in raw_compose["services"].items() if svc.get("profiles")} == monitoring
    assert all(raw_compose["services"][n]["profiles"] == ["monitoring"] for n in monitoring)
    svcs = services(resolved_monitoring)
    published = {n: [p["published"] for p in svcs[n]["ports"]] for n in monitoring}
    assert published == {"prometheus": ["9090"], "grafana": ["3000"]}
    assert all(p["host_ip"] == "127.0.0.1" for n in monitoring for p in svcs[n]["ports"])
    assert svcs["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy", "required": True}}
    assert svcs["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "change-me"
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", svcs["prometheus"]["image"]), svcs["prometheus"]["image"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", svcs["grafana"]["image"]), svcs["grafana"]["image"]
    grafana_mounts = {v["target"]: Path(v["source"]).resolve() for v in svcs["grafana"]["volumes"] if v["type"] == "bind"}
    assert grafana_mounts == {
        "/etc/grafana/provisioning": REPO / "infra/compose/grafana/provisioning",
        "/etc/grafana/dashboards": REPO / "infra/compose/grafana/dashboards",
    }


def test_volumes_with_the_monitoring_profile(resolved_monitoring: dict[str, Any]) -> None:
    test_compose.test_volumes_are_named_and_bind_mounts_are_config_read_only(resolved_monitoring)
    assert {"prometheus-data", "grafana-data"} <= set(resolved_monitoring["volumes"])
