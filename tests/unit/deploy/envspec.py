"""Which environment variables each service reads, from its pydantic-settings class.

Used by the deployment tests (``.env.example`` and ``docker-compose.yml`` must cover exactly
these). Run as a script to print them with their defaults::

    .venv/bin/python -m tests.unit.deploy.envspec

Rules, the ones pydantic-settings and ``shared.settings`` apply:
- a field with a ``validation_alias`` (a string or ``AliasChoices``) is read under those names;
- a ``KafkaConnection`` field built by ``local_kafka_from_env``/``remote_kafka_from_env`` reads
  ``LOCAL_KAFKA_*``/``REMOTE_KAFKA_*``, one variable per ``KafkaConnection`` field;
- any other field is read as ``{env_prefix}{FIELD}``.
A nested model field of any other kind raises: the tests cannot tell what it reads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

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

_KAFKA_FACTORIES = {local_kafka_from_env: LOCAL_KAFKA_PREFIX, remote_kafka_from_env: REMOTE_KAFKA_PREFIX}


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


def main() -> None:
    for service, cls in load_settings().items():
        print(f"# --- {service} ({cls.__name__})")
        for var in settings_env_vars(cls):
            print(f"{var.name}={format_default(var.default)}")


if __name__ == "__main__":
    main()
