"""Fixtures for tests against the real local stack. Each test makes its own topics/collections."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from shared.kafka import KafkaConnection
from shared.settings import local_kafka_from_env, remote_kafka_from_env
from tests.conftest import STACK_ENV


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Integration tests are never skipped: without the stack they fail, loudly.
    if not STACK_ENV.exists():
        raise pytest.UsageError(f"{STACK_ENV} missing: run `./pipeline stack up` before the integration tests")


@pytest.fixture(scope="session")
def local_kafka() -> KafkaConnection:
    return local_kafka_from_env()


@pytest.fixture(scope="session")
def remote_kafka() -> KafkaConnection:
    return remote_kafka_from_env()


@pytest.fixture(scope="session")
def mongodb_uri() -> str:
    return os.environ["MONGODB_URI"]


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return os.environ["POSTGRES_DSN"]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A name no other test uses: for a topic, collection, schema or group id."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    yield f"t_{base}_{uuid.uuid4().hex[:8]}"
