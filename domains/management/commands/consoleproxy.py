"""The console proxy: browsers' WebSockets to guests' screens and serial consoles.

One long-running asyncio process (started by `make demo` and the test fixtures), on
127.0.0.1 only. A connection to /console/ws/?ticket=… is accepted only when its Origin is
one of ALLOWED_HOSTS and its ticket (`domains.consoles`) is known, unexpired and unused;
it then reaches exactly the console the ticket names — the display through
`openGraphicsFD` (a socket through the libvirt connection: the display need not listen
anywhere the proxy could reach; local hosts) or by TCP on the host's console address (a
superuser's setting: remote hosts, `rules.display_route`), the serial console through
libvirt's console stream (remote hosts too) —
and is closed, with the reason, when the user's session ends or their role goes
(checked every VMPANEL_CONSOLE_RECHECK_SECONDS). Viewers' input is dropped here, not
just in the page (`domains.rfb`). Each console's opening and closing is audited.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import translation
from django.utils.translation import gettext_noop
from django.utils.translation.trans_real import parse_accept_lang_header
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from domains import consoles, hypervisor, language
from domains.hypervisor import HypervisorError
from domains.models import AuditEvent, Domain
from domains.rfb import InputFilter, ProtocolError

log = logging.getLogger("domains.consoleproxy")

PATH = "/console/ws/"
# Close codes the page shows the reason of (4000–4999 are the application's).
BAD_TICKET, NOT_ALLOWED, NO_CONSOLE = 4401, 4403, 4502
# How long a display on a console address may take to accept the connection.
CONNECT_SECONDS = 5


def origin_allowed(origin: str | None) -> bool:
    """The page that opened the socket is the panel's own: its host is in ALLOWED_HOSTS."""
    if not origin:
        return False
    host = (urlsplit(origin).hostname or "").lower()
    allowed = [h.lower() for h in settings.ALLOWED_HOSTS]
    return any(
        h == "*" or host == h or (h.startswith(".") and (host == h[1:] or host.endswith(h)))
        for h in allowed
    )


def _db(fn, *args, **kwargs):
    """Run `fn` in a thread with a fresh database connection (the ORM is synchronous)."""

    def call():
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return asyncio.to_thread(call)


def _fit(reason: str) -> str:
    """A close frame's reason holds at most 123 bytes of UTF-8 (a Chinese character takes
    three): cut there, between characters."""
    return reason.encode()[:123].decode(errors="ignore")


def _in_language(code: str, fn, *args):
    """`fn(*args)` with its words in `code` (the ticket holder's language)."""
    with translation.override(code):
        return fn(*args)


def _said(code: str, words: str) -> str:
    """The proxy's own words (marked with gettext_noop) in the ticket holder's language."""
    return _fit(_in_language(code, translation.gettext, words))


def _browser_language(headers) -> str:
    """Without a ticket there is nobody to ask: the browser's language, as the page it was
    opened from had it (the language cookie, then Accept-Language)."""
    cookies = SimpleCookie(headers.get("Cookie") or "")
    if settings.LANGUAGE_COOKIE_NAME in cookies:
        chosen = language.supported(cookies[settings.LANGUAGE_COOKIE_NAME].value)
        if chosen:
            return chosen
    for code, _quality in parse_accept_lang_header(headers.get("Accept-Language") or ""):
        if chosen := language.supported(code):
            return chosen
    return settings.LANGUAGE_CODE


def _audit(kind: str, ticket: consoles.Ticket, domain: Domain, **detail) -> None:
    """console.opened / console.closed: who, which console, view-only or not, how long."""
    words = f"{ticket.kind} console of {domain.name} on {domain.host.name}"
    if ticket.view_only:
        words += " (view only)"
    if "seconds" in detail:
        words += f", closed after {detail['seconds']} s"
    AuditEvent.objects.create(
        kind=kind,
        user_id=ticket.user_id,
        team=domain.team,
        summary=words,
        detail={"domain": str(domain.uuid), "view_only": ticket.view_only, **detail},
    )


class Proxy:
    def __init__(self, recheck_seconds: float):
        self.recheck_seconds = recheck_seconds

    async def process_request(self, connection: ServerConnection, request):
        if not request.path.startswith(PATH):
            return connection.respond(HTTPStatus.NOT_FOUND, "No such console path.\n")
        if not origin_allowed(request.headers.get("Origin")):
            log.warning("console refused: origin %r", request.headers.get("Origin"))
            return connection.respond(HTTPStatus.FORBIDDEN, "This page may not open consoles.\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        token = (parse_qs(urlsplit(ws.request.path).query).get("ticket") or [""])[0]
        ticket = await _db(consoles.consume, token)
        if ticket is None:
            await ws.close(
                BAD_TICKET,
                _said(
                    _browser_language(ws.request.headers),
                    gettext_noop("This console ticket is unknown, expired or used; open it again."),
                ),
            )
            return
        # The reasons a console closes are said in its user's language.
        ws.language = await _db(language.language_of, ticket.user_id)
        reason = await _db(_in_language, ws.language, consoles.still_allowed, ticket)
        if reason:
            await ws.close(NOT_ALLOWED, _fit(reason))
            return
        domain = await _db(
            lambda: Domain.objects.select_related("host", "team").get(pk=ticket.domain_id)
        )
        started = time.monotonic()
        # How the display is reached, for whoever reads the audit: by TCP, or through libvirt.
        display = f"{ticket.address}:{ticket.port}" if ticket.address else "libvirt"
        if ticket.kind == "serial":
            display = "libvirt"
        await _db(_audit, "console.opened", ticket, domain, via=display)
        outcome = "closed"
        try:
            bridge = self.serial if ticket.kind == "serial" else self.vnc
            tasks = [
                asyncio.create_task(bridge(ws, ticket, domain)),
                asyncio.create_task(self.recheck(ws, ticket)),
            ]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
        except HypervisorError as exc:
            outcome = "failed"
            await ws.close(NO_CONSOLE, _fit(exc.message))
        except ProtocolError:
            outcome = "failed"
            await ws.close(1002, _said(ws.language, gettext_noop("Not a VNC client.")))
        finally:
            seconds = round(time.monotonic() - started, 1)
            await _db(_audit, "console.closed", ticket, domain, seconds=seconds, how=outcome)

    async def recheck(self, ws: ServerConnection, ticket: consoles.Ticket) -> None:
        """Close the console once its user may no longer have it."""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            reason = await _db(_in_language, ws.language, consoles.still_allowed, ticket)
            if reason:
                await ws.close(NOT_ALLOWED, _fit(reason))
                return

    async def serial(self, ws: ServerConnection, ticket, domain: Domain) -> None:
        stream = await asyncio.to_thread(
            _in_language, ws.language, hypervisor.SerialStream, domain.host.uri, str(domain.uuid)
        )
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        def read() -> None:  # a thread: libvirt's stream blocks
            while True:
                data = stream.recv(4096)
                loop.call_soon_threadsafe(arrived.put_nowait, data)
                if not data:
                    return

        threading.Thread(target=read, name="serial-read", daemon=True).start()

        async def to_browser() -> None:
            while data := await arrived.get():
                await ws.send(data)
            await ws.close(1000, _said(ws.language, gettext_noop("The guest's console closed.")))

        async def from_browser() -> None:
            async for message in ws:
                if ticket.view_only:
                    continue  # a viewer's keys go nowhere
                data = message.encode() if isinstance(message, str) else message
                await asyncio.to_thread(stream.send, data)

        try:
            await _first_of(to_browser(), from_browser())
        finally:
            stream.close()

    async def vnc(self, ws: ServerConnection, ticket, domain: Domain) -> None:
        if ticket.address:
            # On the host's console address (a superuser's setting, named by the ticket).
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ticket.address, ticket.port), CONNECT_SECONDS
                )
            except (OSError, TimeoutError):
                raise HypervisorError(
                    _in_language(
                        ws.language,
                        translation.gettext,
                        gettext_noop("The display at %(address)s port %(port)s does not answer."),
                    )
                    % {"address": ticket.address, "port": ticket.port}
                ) from None
        else:
            sock = await asyncio.to_thread(
                _in_language,
                ws.language,
                hypervisor.open_graphics_socket,
                domain.host.uri,
                str(domain.uuid),
            )
            reader, writer = await asyncio.open_connection(sock=sock)
        keep = InputFilter(view_only=ticket.view_only)

        async def to_browser() -> None:
            while data := await reader.read(65536):
                await ws.send(data)
            await ws.close(1000, _said(ws.language, gettext_noop("The guest's display closed.")))

        async def from_browser() -> None:
            async for message in ws:
                data = message.encode() if isinstance(message, str) else message
                writer.write(keep.feed(data))
                await writer.drain()

        try:
            await _first_of(to_browser(), from_browser())
        finally:
            writer.close()


async def _first_of(*coroutines) -> None:
    """Run the two directions of a bridge; the first to end ends the other."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc
    finally:
        for task in tasks:
            task.cancel()


class Command(BaseCommand):
    help = "Serve browsers' console WebSockets (VNC and serial) on 127.0.0.1."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.VMPANEL_CONSOLE_PORT)
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args, **options):
        hypervisor.start_event_loop()
        asyncio.run(self.serve(options["host"], options["port"]))

    async def serve(self, host: str, port: int) -> None:
        proxy = Proxy(settings.VMPANEL_CONSOLE_RECHECK_SECONDS)
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
        async with serve(
            proxy.handle, host, port, process_request=proxy.process_request, max_size=2**20
        ):
            self.stdout.write(f"console proxy on ws://{host}:{port}{PATH}")
            await stop
