"""Which environment variables each service reads, from its pydantic-settings class.

Used by the deployment tests (``.env.example`` and ``docker-compose.yml`` must cover exactly
these). Run as a script to print them with their defaults, or with ``--sync`` to rewrite the
generated blocks (between ``>>>``/``<<<`` markers) of both files after a settings class changed::

    .venv/bin/python -m tests.unit.deploy.envspec [--sync]

Rules, the ones pydantic-settings and ``shared.settings`` apply:
- a field with a ``validation_alias`` (a string or ``AliasChoices``) is read under those names;
- a ``KafkaConnection`` field built by ``local_kafka_from_env``/``remote_kafka_from_env`` reads
  ``LOCAL_KAFKA_*``/``REMOTE_KAFKA_*``, one variable per ``KafkaConnection`` field;
- any other field is read as ``{env_prefix}{FIELD}``.
A nested model field of any other kind raises: the tests cannot tell what it reads.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl_api.settings import optional_local_kafka_from_env
from pydantic import AliasChoices, BaseModel
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode

from shared.kafka import KafkaConnection
from shared.settings import LOCAL_KAFKA_PREFIX, REMOTE_KAFKA_PREFIX, local_kafka_from_env, remote_kafka_from_env

# compose service → (module, settings class); a service whose module does not exist yet is skipped
# by ``load_settings`` (colleagues land them over time) but every one that exists is checked.
SERVICES: dict[str, tuple[str, str]] = {
    "bridge": ("bridge.settings", "BridgeSettings"),
    "sink": ("sink.settings", "SinkSettings"),
    "etl-api": ("etl_api.settings", "EtlSettings"),
    "live": ("live.settings", "LiveSettings"),
}

PREFIXES = {"bridge": "BRIDGE_", "sink": "SINK_", "etl-api": "ETL_", "live": "LIVE_"}
REPO = Path(__file__).resolve().parents[3]
# Service variables compose sets itself (not a plain pass-through), with the value it uses.
COMPOSE_VALUES = {
    "ETL_API_TOKEN": "${ETL_API_TOKEN:?set ETL_API_TOKEN in .env}",
    "ETL_SPARK_MASTER": "${ETL_SPARK_MASTER:-spark://spark-master:7077}",
    "LIVE_ETL_API_URL": "${LIVE_ETL_API_URL:-http://etl-api:8103}",
}
# Service variables .env.example sets in its own sections (not documented as a default).
ENV_EXAMPLE_ACTIVE = {"BRIDGE_REMOTE_TOPIC", "ETL_API_TOKEN", "ETL_SPARK_MASTER"}

_KAFKA_FACTORIES: dict[object, str] = {
    local_kafka_from_env: LOCAL_KAFKA_PREFIX,
    remote_kafka_from_env: REMOTE_KAFKA_PREFIX,
    optional_local_kafka_from_env: LOCAL_KAFKA_PREFIX,
}


@dataclass(frozen=True)
class EnvVar:
    name: str
    field: str
    default: Any  # PydanticUndefined when required
    aliases: tuple[str, ...] = ()  # the other names the same field accepts

    @property
    def required(self) -> bool:
        return self.default is PydanticUndefined


def load_settings() -> dict[str, type[BaseSettings]]:
    """The settings classes that exist in the working tree, by compose service name."""
    found: dict[str, type[BaseSettings]] = {}
    for service, (module, cls) in SERVICES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that service has not landed yet
            raise
        found[service] = getattr(mod, cls)
    return found


def _default(info: Any) -> Any:
    if info.default_factory is not None:
        return "<factory>"
    return info.default


def settings_env_vars(cls: type[BaseSettings]) -> list[EnvVar]:
    """Every environment variable ``cls`` reads. The first name of an ``AliasChoices`` is the
    canonical one (the one ``.env.example`` and compose use); the others are kept as aliases."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    out: list[EnvVar] = []
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [str(c).upper() for c in alias.choices if isinstance(c, str)]
            out.append(EnvVar(names[0], field, _default(info), tuple(names[1:])))
            continue
        if isinstance(alias, str):
            out.append(EnvVar(alias.upper(), field, _default(info)))
            continue
        factory = info.default_factory
        if factory in _KAFKA_FACTORIES:
            kafka_prefix = _KAFKA_FACTORIES[factory]
            for sub, sub_info in KafkaConnection.model_fields.items():
                out.append(EnvVar(kafka_prefix + sub.upper(), f"{field}.{sub}", sub_info.default))
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            raise TypeError(f"{cls.__name__}.{field}: nested model without a known env mapping")
        out.append(EnvVar(prefix + field.upper(), field, _default(info)))
    return out


def format_default(value: Any) -> str:
    """A default as it would be written in an env file."""
    if value is PydanticUndefined or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return str(value)


def env_file_default(cls: type[BaseSettings], var: EnvVar) -> str:
    """The default as ``.env.example`` writes it: complex types without ``NoDecode`` are JSON."""
    field = cls.model_fields.get(var.field)
    if field is not None and isinstance(var.default, (tuple, list)) and NoDecode not in field.metadata:
        return json.dumps(list(var.default))
    return format_default(var.default)


def own_vars(service: str, cls: type[BaseSettings]) -> list[EnvVar]:
    return [v for v in settings_env_vars(cls) if v.name.startswith(PREFIXES[service])]


def compose_block(service: str, cls: type[BaseSettings]) -> list[str]:
    return [f"      {v.name}: {COMPOSE_VALUES[v.name]}" if v.name in COMPOSE_VALUES else f"      {v.name}:" for v in own_vars(service, cls)]


def env_example_block(service: str, cls: type[BaseSettings]) -> list[str]:
    return [f"# {v.name}={env_file_default(cls, v)}" for v in own_vars(service, cls) if v.name not in ENV_EXAMPLE_ACTIVE]


def _replace_block(text: str, service: str, lines: list[str]) -> str:
    name = re.escape(service)
    pattern = re.compile(rf"(?ms)^(?P<open>[ #]*# >>> {name} settings[^\n]*\n)(?P<body>.*?)^(?P<close>[ #]*# <<< {name} settings)")
    if not pattern.search(text):
        raise SystemExit(f"no '>>> {service} settings' … '<<< {service} settings' block")
    return pattern.sub(lambda m: m["open"] + "".join(line + "\n" for line in lines) + m["close"], text, count=1)


def sync() -> None:
    """Rewrites the generated per-service blocks of docker-compose.yml and .env.example."""
    compose, env = REPO / "docker-compose.yml", REPO / ".env.example"
    compose_text, env_text = compose.read_text(), env.read_text()
    for service, cls in load_settings().items():
        compose_text = _replace_block(compose_text, service, compose_block(service, cls))
        env_text = _replace_block(env_text, service, env_example_block(service, cls))
    compose.write_text(compose_text)
    env.write_text(env_text)


def main() -> None:
    if "--sync" in sys.argv[1:]:
        sync()
        return
    for service, cls in load_settings().items():
        print(f"# --- {service} ({cls.__name__})")
        for var in settings_env_vars(cls):
            print(f"{var.name}={env_file_default(cls, var)}")


if __name__ == "__main__":
    main()
