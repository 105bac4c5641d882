"""Opening a console: the checks, the VNC password, the one-time ticket."""

from __future__ import annotations

import secrets

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from .. import consoles, domxml, hypervisor, rules
from ..hypervisor import HypervisorError
from ..models import Domain, actions_on
from .common import ActionRefused

# How long the VNC password set for a ticket stays good: long enough to connect.
VNC_PASSWORD_SECONDS = 60


def console_url() -> str:
    """Where the page's WebSocket goes: the proxy under the panel's own origin
    (/console/ws/ behind a front proxy), or the proxy's own address in the demo."""
    return settings.VMPANEL_CONSOLE_URL


def open_console(user: User, domain: Domain, kind: str, session_key: str) -> dict:
    """Check that `user` may open this console now and hand out a ticket for it. Viewers
    get a view-only console; operators and above, keyboard and mouse."""
    may = actions_on(user, domain)
    if "view" not in may:
        raise ActionRefused(_("No such VM."), status=404)
    if kind not in consoles.KINDS:
        raise ActionRefused(_("Unknown kind of console: choose vnc or serial."), status=400)
    if not session_key:
        raise ActionRefused(_("Sign in again to open a console."), status=403)
    if domain.gone_at is not None or domain.libvirt_id is None or not domain.host.enabled:
        message = _("%(name)s is not running: it has no console.")
        raise ActionRefused(message % {"name": domain.name})
    try:
        devices = hypervisor.console_devices(domain.host.uri, str(domain.uuid))
    except HypervisorError as exc:
        raise ActionRefused(exc.message, status=503) from None
    password = ""
    route = None
    if kind == "serial" and not devices.serial:
        raise ActionRefused(_("%(name)s has no serial console.") % {"name": domain.name})
    if kind == "vnc":
        vnc = [g for g in devices.graphics if g.type == "vnc"]
        if not vnc:
            raise ActionRefused(_("%(name)s has no VNC display.") % {"name": domain.name})
        exposed = [a for g in vnc for a in g.listen if a in domxml.ANY_ADDRESS]
        if exposed:
            raise ActionRefused(
                _(
                    "%(name)s's display listens on every interface (%(address)s), so anyone "
                    "on the network could reach it around the panel. Make it listen on "
                    "127.0.0.1 (or the host's management address) first."
                )
                % {"name": domain.name, "address": exposed[0]}
            )
        display = vnc[0]
        route = rules.display_route(
            domain.name, domain.host.uri, display.listen, display.port,
            domain.host.console_address,
        )  # fmt: skip
        if isinstance(route, str):
            raise ActionRefused(route)
        password = secrets.token_urlsafe(6)[:8]  # VNC uses at most 8 characters
        try:
            hypervisor.set_vnc_password(
                domain.host.uri, str(domain.uuid), password, VNC_PASSWORD_SECONDS
            )
        except HypervisorError as exc:
            if not exc.password_unsupported:
                raise ActionRefused(exc.message, status=503) from None
            if route.address:
                # On the management network, a display anyone there could watch.
                raise ActionRefused(
                    _(
                        "%(name)s's display on %(address)s has no password, and QEMU cannot "
                        "give it one while it runs: anyone on that network could watch it. "
                        "Give the display a password (edit its XML) and restart %(name)s."
                    )
                    % {"name": domain.name, "address": route.address}
                ) from None
            # A display started without a password cannot be given one while it runs
            # (QEMU). The proxy reaches it only through libvirt, and it listens on no
            # address but the host's own: no password, then.
            password = ""
    view_only = "operate" not in may
    try:
        ticket = consoles.issue(user, domain, session_key, kind, view_only, route)
    except redis.RedisError:
        # Tickets live in Redis: without it no console opens (this was a bare 500).
        raise ActionRefused(
            _("The task queue does not answer, so no console can be opened now. Try again later."),
            status=503,
        ) from None
    return {
        "ticket": ticket,
        "url": f"{console_url()}?ticket={ticket}",
        "password": password,
        "expires_in": settings.VMPANEL_CONSOLE_TICKET_SECONDS,
        "view_only": view_only,
    }
