""".env.example documents exactly the variables the deployment reads, and compose hands each service
every variable its settings class reads.

Settings classes are imported from the working tree (tests/unit/deploy/envspec.py): a variable a
service starts reading fails these tests until .env.example and docker-compose.yml carry it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode

from tests.unit.deploy.conftest import REPO, EnvEntry
from tests.unit.deploy.envspec import SERVICES, EnvVar, format_default, load_settings, settings_env_vars

SETTINGS = load_settings()
# Set by docker-compose.yml for a container and so not in .env.example as the service's default.
COMPOSE_OVERRIDES = {"ETL_SPARK_MASTER"}


def test_the_core_services_settings_exist() -> None:
    assert {"bridge", "sink"} <= set(SETTINGS), "bridge and sink settings must import"
    assert set(SETTINGS) <= set(SERVICES)


def all_settings_vars() -> dict[str, EnvVar]:
    out: dict[str, EnvVar] = {}
    for cls in SETTINGS.values():
        for var in settings_env_vars(cls):
            out.setdefault(var.name, var)
    return out


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_a_service_reads_is_in_env_example(service: str, env_example: dict[str, EnvEntry]) -> None:
    missing = [v.name for v in settings_env_vars(SETTINGS[service]) if v.name not in env_example]
    assert not missing, f"{service} reads {missing}, not in .env.example: run .venv/bin/python -m tests.unit.deploy.envspec --sync"


def test_every_documented_variable_is_read_by_someone(env_example: dict[str, EnvEntry], compose_text: str) -> None:
    read_by_services = set(all_settings_vars())
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    referenced_in_env = {n for e in env_example.values() for n in re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", e.value)}
    unread = sorted(set(env_example) - read_by_services - interpolated - referenced_in_env)
    assert not unread, f".env.example documents variables nobody reads: {unread} (envspec --sync regenerates the service blocks)"


def test_documented_defaults_are_the_services_defaults(env_example: dict[str, EnvEntry]) -> None:
    """A commented-out ``# NAME=value`` line promises the service's default."""
    wrong = []
    for cls in SETTINGS.values():
        for var in settings_env_vars(cls):
            entry = env_example.get(var.name)
            if entry is None or entry.active or var.default is PydanticUndefined or var.default == "<factory>":
                continue
            field = cls.model_fields.get(var.field)
            default = var.default
            if field is not None and isinstance(default, tuple) and NoDecode not in field.metadata:
                expected = json.dumps(list(default))  # pydantic-settings reads complex types as JSON
            else:
                expected = format_default(default)
            if entry.value != expected:
                wrong.append(f"# {var.name}={expected}  (documented: {entry.value!r})")
    assert not wrong, "run .venv/bin/python -m tests.unit.deploy.envspec --sync, or fix .env.example:\n" + "\n".join(wrong)


def compose_environment(resolved: dict[str, Any], service: str) -> dict[str, Any]:
    return resolved["services"][service]["environment"]


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_passes_every_variable_to_its_service(service: str, resolved_compose: dict[str, Any]) -> None:
    env = compose_environment(resolved_compose, service)
    missing = [v.name for v in settings_env_vars(SETTINGS[service]) if v.name not in env]
    assert not missing, f"docker-compose.yml does not pass {missing} to {service}: run .venv/bin/python -m tests.unit.deploy.envspec --sync"
    # and nothing another service owns: a service sees its own prefix and the shared connections
    own = {v.name for v in settings_env_vars(SETTINGS[service])} | {a for v in settings_env_vars(SETTINGS[service]) for a in v.aliases}
    strangers = sorted(set(env) - own)
    assert not strangers, f"{service} gets variables it does not read: {strangers} (run: python -m tests.unit.deploy.envspec --sync)"


def instantiate(cls: type[BaseSettings], env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    import os

    for key in list(os.environ):
        if re.match(r"^(LOCAL_KAFKA_|REMOTE_KAFKA_|MONGODB_|POSTGRES_|BRIDGE_|SINK_|ETL_|LIVE_)", key):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, str(value))
    return cls()


def image_environment(service: str) -> dict[str, str]:
    """The ENV of the service image's final stage."""
    import shlex

    from tests.unit.deploy.test_dockerfiles import final_stage, instructions

    env: dict[str, str] = {}
    for word, args in final_stage(instructions(REPO / "services" / service / "Dockerfile")):
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))  # type: ignore[misc]
    return env


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_each_service_accepts_its_deployed_environment(service: str, resolved_compose: dict[str, Any], monkeypatch) -> None:
    """The environment a container gets (the image's ENV, then what compose sets from .env.example)
    validates in its settings class, and the service listens where the others can reach it."""
    deployed = {**image_environment(service), **{k: v for k, v in compose_environment(resolved_compose, service).items() if v is not None}}
    settings: Any = instantiate(SETTINGS[service], deployed, monkeypatch)
    host = settings.host if service == "etl-api" else settings.http_host
    assert host == "0.0.0.0", f"{service} would listen on {host} only: other containers could not reach it"
    if hasattr(settings, "local_kafka"):
        assert settings.local_kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
        assert settings.local_kafka.security_protocol == "SASL_PLAINTEXT"
        assert settings.local_kafka.sasl_password.get_secret_value() == "change-me"
    if service == "bridge":
        assert settings.remote_kafka.bootstrap_servers == "remote-broker.example.com:9092"
        assert settings.remote_kafka.sasl_username == "change-me"
        assert settings.remote_topic == "product_views"
    if service in ("sink", "etl-api"):
        uri = settings.mongodb_uri.get_secret_value() if hasattr(settings.mongodb_uri, "get_secret_value") else settings.mongodb_uri
        assert uri == "mongodb://pipeline:change-me@mongo:27017/?replicaSet=rs0&authSource=admin"
        assert (settings.mongodb_database, settings.mongodb_collection) == ("kafka_data_db", "product_views_records")
    if service == "etl-api":
        assert settings.postgres_dsn.get_secret_value() == "postgresql://pipeline:change-me@postgres:5432/warehouse"
        assert settings.spark_master == "spark://spark-master:7077"
        assert settings.api_token.get_secret_value() == "change-me"


def test_a_new_settings_variable_fails_the_check(env_example: dict[str, EnvEntry]) -> None:
    """The check above is live: a settings class with one more field is caught."""
    base = SETTINGS["bridge"]
    grown = type("GrownBridgeSettings", (base,), {"__annotations__": {"brand_new_knob": int}, "brand_new_knob": 1})
    names = {v.name for v in settings_env_vars(grown)}
    assert "BRIDGE_BRAND_NEW_KNOB" in names
    assert "BRIDGE_BRAND_NEW_KNOB" not in env_example


def test_env_example_points_at_the_compose_services_not_the_local_stack(env_example: dict[str, EnvEntry]) -> None:
    values = {e.name: e.value for e in env_example.values() if e.active}
    assert values["LOCAL_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert "@mongo:27017/" in values["MONGODB_URI"] and "@postgres:5432/" in values["POSTGRES_DSN"]
    loopback = [n for n, v in values.items() if "127.0.0.1:" in v or "localhost" in v]
    assert not loopback, f"local-stack addresses in .env.example: {loopback}"
