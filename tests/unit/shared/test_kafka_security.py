"""shared.kafka: credentials without a SASL security protocol refuse to start; the SASL_PLAINTEXT
warning is ours, once per cluster, and aiokafka's repeated one is dropped."""

from __future__ import annotations

import logging

import pytest
from bridge.settings import BridgeSettings
from pydantic import SecretStr

from shared import kafka
from shared.errors import ConfigError
from shared.kafka import AIOKAFKA_CLEAR_PASSWORD_MESSAGE, KafkaConnection
from shared.settings import local_kafka_from_env

NO_PROTOCOL = (
    "LOCAL_KAFKA_SASL_USERNAME and LOCAL_KAFKA_SASL_PASSWORD set but LOCAL_KAFKA_SECURITY_PROTOCOL is not: "
    "set it to SASL_SSL (or SASL_PLAINTEXT on a trusted network); without it the client would connect with "
    "PLAINTEXT and never send the credentials"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("LOCAL_KAFKA_", "REMOTE_KAFKA_", "BRIDGE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOCAL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REMOTE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:2")
    monkeypatch.setattr(kafka, "_warned_clear_password", set())


def test_credentials_without_a_protocol_refuse_to_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("LOCAL_KAFKA_SASL_PASSWORD", "pw")
    with pytest.raises(ConfigError) as err:
        local_kafka_from_env()
    assert str(err.value) == NO_PROTOCOL
    with pytest.raises(ConfigError) as err:
        BridgeSettings()  # a service's settings: the same error, before any client exists
    assert str(err.value) == NO_PROTOCOL


def test_a_password_alone_names_only_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("REMOTE_KAFKA_SECURITY_PROTOCOL", "")  # empty counts as unset
    with pytest.raises(ConfigError) as err:
        BridgeSettings()
    assert str(err.value).startswith("REMOTE_KAFKA_SASL_PASSWORD set but REMOTE_KAFKA_SECURITY_PROTOCOL is not: ")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_credentials_with_a_protocol_that_ignores_them_refuse_to_start(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    monkeypatch.setenv("LOCAL_KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("LOCAL_KAFKA_SECURITY_PROTOCOL", protocol)
    with pytest.raises(ConfigError) as err:
        local_kafka_from_env()
    assert str(err.value) == (
        f"LOCAL_KAFKA_SASL_USERNAME set but LOCAL_KAFKA_SECURITY_PROTOCOL={protocol} does not use them: "
        "set it to SASL_SSL or SASL_PLAINTEXT, or remove the credentials"
    )


def test_direct_construction_names_the_fields() -> None:
    with pytest.raises(ConfigError) as err:
        KafkaConnection(bootstrap_servers="h:1", sasl_username="u", sasl_password=SecretStr("p"))
    assert str(err.value).startswith("sasl_username and sasl_password set but security_protocol is not: ")


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_explicit_sasl_protocol_and_no_credentials_are_accepted(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    assert local_kafka_from_env().security_protocol == "PLAINTEXT"  # no credentials: PLAINTEXT is fine
    monkeypatch.setenv("LOCAL_KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("LOCAL_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("LOCAL_KAFKA_SECURITY_PROTOCOL", protocol)
    conn = local_kafka_from_env()
    assert (conn.security_protocol, conn.sasl_username, conn.sasl_password.get_secret_value() if conn.sasl_password else None) == (
        protocol,
        "pipeline",
        "pw",
    )


def _conn(servers: str, protocol: str) -> KafkaConnection:
    return KafkaConnection(bootstrap_servers=servers, security_protocol=protocol, sasl_username="u", sasl_password=SecretStr("p"))


def test_sasl_plaintext_is_warned_once_per_cluster(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        _conn("a:1", "SASL_PLAINTEXT").client_kwargs()
    _conn("b:1", "SASL_PLAINTEXT").client_kwargs()
    _conn("c:1", "SASL_SSL").client_kwargs()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "shared.kafka",
            "WARNING",
            f"Kafka {servers}: SASL_PLAINTEXT sends the password of user u unencrypted on every connection; "
            "fine on the local stack's loopback, use SASL_SSL anywhere else",
        )
        for servers in ("a:1", "b:1")
    ]


def test_aiokafkas_repeated_clear_password_warning_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    aiokafka_conn = logging.getLogger("aiokafka.conn")
    for _ in range(3):
        aiokafka_conn.warning(AIOKAFKA_CLEAR_PASSWORD_MESSAGE)
    aiokafka_conn.warning("Unable to connect to node with id %s", 1)  # its other warnings still pass
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("aiokafka.conn", "Unable to connect to node with id 1")]
