"""A database too busy to answer is a "try again" page, never a bare 500.

Django's 500 handler is where every uncaught error of a request ends, whether a view, a
middleware (sessions, login) or a template met it; this one answers 503 with plain words
when the error is a lock not had in time or a connection the database dropped while the
request used it (the next request gets a new one), and leaves every other error to
Django's own.
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults

log = logging.getLogger(__name__)

# What the databases say when a lock was not had in time (SQLite, PostgreSQL).
_BUSY_WORDS = ("database is locked", "database table is locked", "lock timeout", "deadlock")


# A connection the database dropped: PostgreSQL's SQLSTATEs for a broken connection (class
# 08) and for a server that ended it (shut down, crashed, an administrator's
# pg_terminate_backend, not accepting connections yet), and psycopg's words for one found
# already closed.
_LOST_STATES = ("08", "57P01", "57P02", "57P03")
_LOST_WORDS = ("the connection is closed", "server closed the connection", "connection is lost")


# psycopg's words for a connection that could not be made: refused (the database down) or
# not answered within connect_timeout (settings.py: one that hangs). Nothing was done.
_UNREACHABLE_WORDS = ("connection timeout expired", "connection failed")


def is_busy(exc: BaseException | None) -> bool:
    words = _BUSY_WORDS + _UNREACHABLE_WORDS
    return isinstance(exc, OperationalError) and any(w in str(exc).lower() for w in words)


def is_lost(exc: BaseException | None) -> bool:
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    state = getattr(exc.__cause__, "sqlstate", None) or ""
    return state.startswith(_LOST_STATES) or any(w in str(exc).lower() for w in _LOST_WORDS)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the busy page (503, Retry-After) for a locked database or a dropped
    connection, else Django's."""
    exc = sys.exc_info()[1]
    lost = is_lost(exc)
    if not (lost or is_busy(exc)):
        return defaults.server_error(request)
    log.warning(
        "database %s on %s %s: %s", "lost" if lost else "busy", request.method, request.path, exc
    )
    # Rendered without the request: its context processors would ask the database again.
    response = HttpResponse(render_to_string("busy.html", {"lost": lost}), status=503)
    response["Retry-After"] = "5"
    return response
