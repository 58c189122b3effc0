"""What a call to PostgreSQL through asyncpg raises when the server is away, restarting, or broke a
connection mid-operation: one tuple for every service's "wait and retry" (or "not ready"), never
a crash. Each service that talks to PostgreSQL binds it once (``failures_of(asyncpg)``): the
bridge's image ships ``shared`` without asyncpg, so this module does not import it.

Besides the server's own errors (``PostgresError``) and the transport's (``OSError``, a
``TimeoutError`` of a bounded call, ``InterfaceError`` for a closed connection), asyncpg raises
``InternalClientError`` when a connection's protocol is left mid-operation: a query cancelled by
its timeout while the postmaster exited, then the pool's reset on release ("cannot switch to
state 15; another operation (2) is in progress", asyncpg 0.32.0). The hour soak of 2026-12-07
saw that take the sink down on a PostgreSQL restart. Cancellation (``CancelledError``) is not
in it: it is not a failure of the store.
"""

from __future__ import annotations

from types import ModuleType


def failures_of(asyncpg: ModuleType) -> tuple[type[Exception], ...]:
    """The exception classes of a failed PostgreSQL call, ``asyncpg`` being the imported module."""
    return (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
