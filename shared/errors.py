"""The error hierarchy every service uses.

``retriable`` tells the caller what to do: retriable → bounded backoff and not-ready;
not retriable → the record is poison and goes to the dead-letter topic with its reason.
"""

from __future__ import annotations


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
