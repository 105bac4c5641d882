"""A database too busy to answer is a "try again" page, never a bare 500.

Django's 500 handler is where every uncaught error of a request ends, whether a view, a
middleware (sessions, login) or a template met it; this one answers 503 with plain words
when the error is a lock not had in time, and leaves every other error to Django's own.
"""

from __future__ import annotations

import logging
import sys

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults

log = logging.getLogger(__name__)

# What the databases say when a lock was not had in time (SQLite, PostgreSQL).
_BUSY_WORDS = ("database is locked", "database table is locked", "lock timeout", "deadlock")


def is_busy(exc: BaseException | None) -> bool:
    return isinstance(exc, OperationalError) and any(w in str(exc).lower() for w in _BUSY_WORDS)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the busy page (503, Retry-After) for a locked database, else Django's."""
    exc = sys.exc_info()[1]
    if not is_busy(exc):
        return defaults.server_error(request)
    log.warning("database busy on %s %s: %s", request.method, request.path, exc)
    # Rendered without the request: its context processors would ask the database again.
    response = HttpResponse(render_to_string("busy.html"), status=503)
    response["Retry-After"] = "5"
    return response
