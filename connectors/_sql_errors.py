"""The database's failures as the engine's typed errors, decided once at the connector's edge.

==============================================  ==========================  =========
what happened                                    raised                      status
==============================================  ==========================  =========
refused, reset, DNS, server gone, pool broken    BackendUnreachable          502
no free pooled connection in time                BackendTimeout(reached=F)   504
statement timeout (57014), lock timeout (55P03)  BackendTimeout              504
unique, foreign key, not null, check (23xxx)     ConstraintViolation         409
a value of the wrong type or range (22xxx)       BackendRejected             422
anything else the database refused (syntax,      BackendRejected             502
no such table, permission)
==============================================  ==========================  =========

The database's own words go to ``internal`` (the logs), with the SQLSTATE; the caller's
message names the endpoint and, for constraints, the constraint when the database names it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import exc as sa_exc

from engine.errors import BackendError, BackendRejected, BackendTimeout, BackendUnreachable, ConstraintViolation

# sqlite3 has no SQLSTATE: these words in its OperationalError mean the database is unusable,
# not that the statement is wrong.
_SQLITE_UNAVAILABLE = ("unable to open database", "disk i/o error", "database is locked")


def _sqlstate(orig: Any) -> str | None:
    for name in ("sqlstate", "pgcode"):
        value = getattr(orig, name, None)
        if isinstance(value, str) and value:
            return value
    inner = getattr(orig, "__cause__", None)
    value = getattr(inner, "sqlstate", None)
    return value if isinstance(value, str) else None


def _constraint_name(orig: Any) -> str | None:
    for source in (orig, getattr(orig, "__cause__", None), getattr(orig, "diag", None)):
        name = getattr(source, "constraint_name", None)
        if isinstance(name, str) and name:
            return name
    return None


def map_database_error(exc: BaseException, endpoint: str) -> BackendError:
    """The typed error for a SQLAlchemy or driver failure (raise it ``from exc``)."""
    if isinstance(exc, sa_exc.TimeoutError):
        return BackendTimeout(f"endpoint {endpoint!r}: no free database connection in time (the pool is full)",
                              internal=str(exc), reached=False)
    if isinstance(exc, TimeoutError):
        return BackendTimeout(f"endpoint {endpoint!r}: the statement did not finish in time", internal=str(exc))
    if isinstance(exc, (OSError, ConnectionError)):
        return BackendUnreachable(f"endpoint {endpoint!r}: the database is unreachable", internal=str(exc))
    if not isinstance(exc, sa_exc.DBAPIError):
        if isinstance(exc, sa_exc.SQLAlchemyError):
            return BackendRejected(f"endpoint {endpoint!r}: the database refused the statement", internal=str(exc))
        return BackendUnreachable(f"endpoint {endpoint!r}: the database failed", internal=repr(exc))
    orig = exc.orig
    state = _sqlstate(orig) or ""
    where = f"SQLSTATE {state}: {orig}" if state else str(orig)
    if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError) or state.startswith(("08", "57P")):
        return BackendUnreachable(f"endpoint {endpoint!r}: the database is unreachable", internal=where)
    if state in ("57014", "55P03") or "canceling statement due to statement timeout" in str(orig):
        return BackendTimeout(f"endpoint {endpoint!r}: the statement did not finish in time", internal=where)
    if isinstance(exc, sa_exc.IntegrityError) or state.startswith("23"):
        constraint = _constraint_name(orig)
        named = f" ({constraint})" if constraint else ""
        return ConstraintViolation(f"endpoint {endpoint!r}: the change breaks a constraint of the data{named}",
                                   internal=where, extra={"constraint": constraint} if constraint else None)
    if isinstance(exc, sa_exc.DataError) or state.startswith("22"):
        return BackendRejected(f"endpoint {endpoint!r}: a value does not fit its column", status=422,
                               code="invalid-data", internal=where)
    if isinstance(orig, sqlite3.OperationalError) and any(w in str(orig).lower() for w in _SQLITE_UNAVAILABLE):
        return BackendUnreachable(f"endpoint {endpoint!r}: the database is unusable", internal=where)
    if isinstance(exc, sa_exc.OperationalError) and not isinstance(orig, sqlite3.OperationalError) and not state:
        return BackendUnreachable(f"endpoint {endpoint!r}: the database is unreachable", internal=where)
    return BackendRejected(f"endpoint {endpoint!r}: the database refused the statement", internal=where)
