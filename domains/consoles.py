"""Console tickets: what lets one browser tab open one console, once.

Opening a console is a POST (CSRF-protected, role checked) that stores a ticket in Redis —
random, 256 bits, alive VMPANEL_CONSOLE_TICKET_SECONDS, bound to the user, the domain, the
session and the kind of console — and hands it to the page. The console proxy
(`manage.py consoleproxy`) consumes it on first use (GETDEL: a second use finds nothing),
and asks `still_allowed` again every VMPANEL_CONSOLE_RECHECK_SECONDS while the console is
open: a session that ended or a role taken away closes it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .models import Domain, actions_on

KINDS = ("vnc", "serial")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Bounded: a page asking for a ticket, and the proxy spending one, say that Redis does
    # not answer within seconds rather than wait on one that hangs.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _key(token: str) -> str:
    return f"vmpanel:console:ticket:{token}"


@dataclass(frozen=True)
class Ticket:
    user_id: int
    domain_id: int
    session_key: str
    kind: str  # "vnc" or "serial"
    view_only: bool
    issued_at: float
    # Where the proxy connects for a display (`rules.display_route`): the host's console
    # address and the display's port; blank, through libvirt's connection.
    address: str = ""
    port: int = 0


def issue(user, domain: Domain, session_key: str, kind: str, view_only: bool, route=None) -> str:
    """A new one-time ticket for this user, domain, session and console; `route`: the
    display's `rules.DisplayRoute`, for a VNC console."""
    token = secrets.token_urlsafe(32)  # 256 bits
    address, port = (route.address, route.port) if route is not None else ("", 0)
    ticket = Ticket(user.pk, domain.pk, session_key, kind, view_only, time.time(), address, port)
    _redis().set(
        _key(token), json.dumps(asdict(ticket)), ex=settings.VMPANEL_CONSOLE_TICKET_SECONDS
    )
    return token


def consume(token: str) -> Ticket | None:
    """The ticket, removed as it is read (a second use finds nothing); None when unknown,
    expired, already used or not even shaped like a ticket."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        return None
    raw = _redis().getdel(_key(token))
    if raw is None:
        return None
    return Ticket(**json.loads(raw))


def _session(session_key: str) -> SessionBase:
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    return engine(session_key)


def still_allowed(ticket: Ticket) -> str | None:
    """None while the console may stay open; else why not, in plain words."""
    session = _session(ticket.session_key)
    if not session.exists(ticket.session_key) or str(session.get("_auth_user_id")) != str(
        ticket.user_id
    ):
        return _("Your session has ended; sign in again to open the console.")
    user = get_user_model().objects.filter(pk=ticket.user_id, is_active=True).first()
    domain = Domain.objects.select_related("host").filter(pk=ticket.domain_id).first()
    if user is None or domain is None:
        return _("This console is no longer yours to see.")
    may = actions_on(user, domain)
    if "view" not in may or (not ticket.view_only and "operate" not in may):
        return _("Your role on this VM has changed; open the console again.")
    if domain.gone_at is not None or domain.libvirt_id is None:
        return _("The VM is not running any more.")
    return None
