"""shared.errors: every error class of the services is a PipelineError that says whether it is
retriable; ``is_retriable`` classifies the third-party exceptions (aiokafka, pymongo, the OS)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pymongo.errors
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced
from sink.batch import BatchAbandonedError
from sink.mongo import MongoBatchRefusedError, MongoUnavailableError
from sink.verdicts import Verdict

from shared.errors import BackendUnavailableError, ConfigError, InvalidEventError, PipelineError, is_retriable
from shared.jsonvalues import JsonValueError

PACKAGES = ("shared", "bridge", "sink", "live", "etl_api")


def modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    found = [root]
    for info in pkgutil.iter_modules(root.__path__, f"{package}."):
        if not info.name.endswith("__main__"):
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_error_class_derives_from_the_shared_hierarchy(package: str) -> None:
    own = [
        cls
        for module in modules(package)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]
    strays = [f"{cls.__module__}.{cls.__name__}" for cls in own if not issubclass(cls, PipelineError)]
    assert not strays, f"error classes outside the shared hierarchy: {strays}"
    assert all(isinstance(cls.retriable, bool) for cls in own if issubclass(cls, PipelineError))


def test_each_class_says_whether_it_is_retriable() -> None:
    assert is_retriable(BackendUnavailableError("down"))
    assert is_retriable(MongoUnavailableError("down", timed_out=True))
    for error in (
        ConfigError("x"),
        InvalidEventError("bad"),
        JsonValueError("TooDeep", "deep"),
        BatchAbandonedError("stopping"),
        MongoBatchRefusedError(1, "InternalError", "NUL", Verdict.REFUSAL),
    ):
        assert not is_retriable(error), error
    assert isinstance(JsonValueError("TooDeep", "deep"), ValueError)  # still caught as a ValueError


def test_kafka_and_os_errors_are_retriable_others_are_not() -> None:
    for error in (KafkaError(), KafkaConnectionError(), ProducerFenced(), OSError("refused"), ConnectionResetError(), TimeoutError()):
        assert is_retriable(error), error
    for error in (ValueError("x"), KeyError("k"), RuntimeError("bug"), AssertionError()):
        assert not is_retriable(error), error


def test_pymongo_errors_are_retriable_only_when_no_document_is_to_blame() -> None:
    assert is_retriable(pymongo.errors.AutoReconnect("connection closed"))
    assert is_retriable(pymongo.errors.ServerSelectionTimeoutError("no server"))
    assert is_retriable(pymongo.errors.WriteConcernError("wtimeout", 64))
    assert is_retriable(pymongo.errors.ExecutionTimeout("maxTimeMS", 50))
    labelled = pymongo.errors.OperationFailure("busy", 2, {"errorLabels": ["RetryableWriteError"]})
    assert is_retriable(labelled)
    assert not is_retriable(pymongo.errors.OperationFailure("bad value", 2, {}))
    assert not is_retriable(pymongo.errors.BulkWriteError({"writeErrors": [{"index": 0, "code": 11000}]}))


def test_describe_says_where_an_exception_without_a_message_was_raised() -> None:
    """The 40-minute soak of 2026-12-07 saw the bridge not ready for 96 s with the reason
    "TimeoutError: ; retrying in 0.4s": a bare TimeoutError says nothing of what timed out."""
    import asyncio

    from shared.errors import describe

    async def bounded() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    try:
        asyncio.run(bounded())
    except TimeoutError as exc:
        text = describe(exc)
    assert text.startswith("TimeoutError (at shared/test_errors.py:") and text.endswith(" in bounded)"), text
    assert describe(ValueError("bad value")) == "ValueError: bad value"
    assert describe(KeyError("k")) == "KeyError: 'k'"
