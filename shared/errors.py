"""The error hierarchy every service uses, and :func:`is_retriable` for any exception.

Every error class of the services derives from :class:`PipelineError` and says with its class
attribute ``retriable`` what the caller does: retriable → bounded backoff and not-ready, then
the same work again; not retriable → it is no outage (a poison record goes to the dead-letter
topic with its reason; a bad setting or a bug ends the service). Third-party exceptions (aiokafka,
pymongo, the OS) carry no such attribute: :func:`is_retriable` is their one classification.
"""

from __future__ import annotations

import sys
import traceback

from aiokafka.errors import KafkaError

# pymongo error labels that mark an answer as transient, whatever its code.
MONGO_TRANSIENT_LABELS = ("RetryableWriteError", "NetworkError", "SystemOverloadedError", "RetryableError")


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    retriable: bool = False


class ConfigError(PipelineError):
    """Settings are missing or inconsistent; the service cannot start."""


class InvalidEventError(PipelineError):
    """A record cannot become a valid event. ``stage`` and ``reason`` go into the DLQ headers."""

    def __init__(self, reason: str, *, stage: str = "validate", error_class: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.error_class = error_class or type(self).__name__


class BackendUnavailableError(PipelineError):
    """A broker or database did not answer; try again later."""

    retriable = True


def is_retriable(exc: BaseException) -> bool:
    """Whether the same work may succeed later, unchanged: a :class:`PipelineError` says so
    itself (``retriable``). Of the others: any aiokafka ``KafkaError`` (brokers down, fencing, a
    coordinator moving: a new session settles them), ``OSError`` and ``TimeoutError`` (no answer);
    a pymongo error that is a connection failure, a write-concern error, a timeout or carries a
    transient label (:data:`MONGO_TRANSIENT_LABELS`). Anything else is not: a refusal or a bug.

    pymongo is not imported here (not every service's image has it): an exception can only be
    one of its errors once the sink has loaded it."""
    if isinstance(exc, PipelineError):
        return exc.retriable
    if isinstance(exc, KafkaError | OSError | TimeoutError):
        return True
    mongo = sys.modules.get("pymongo.errors")
    if mongo is not None and isinstance(exc, mongo.PyMongoError):
        if isinstance(exc, mongo.ConnectionFailure | mongo.WriteConcernError) or exc.timeout:
            return True
        return any(exc.has_error_label(label) for label in MONGO_TRANSIENT_LABELS)
    return False


def describe(exc: BaseException) -> str:
    """``"Class: message"``; for an exception without a message (a bare ``TimeoutError`` from
    ``asyncio.timeout``), where it was raised instead: ``"TimeoutError (at bridge/app.py:321 in
    _session)"``, the innermost frame of this project's code, else the innermost frame."""
    text = str(exc)
    if text:
        return f"{type(exc).__name__}: {text}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename and "/lib/python" not in f.filename] or frames
    if not ours:
        return type(exc).__name__
    frame = ours[-1]
    where = "/".join(frame.filename.split("/")[-2:])
    return f"{type(exc).__name__} (at {where}:{frame.lineno} in {frame.name})"
