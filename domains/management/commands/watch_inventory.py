"""The inventory watcher: libvirt lifecycle events plus a periodic full read per host.

Runs for as long as the panel runs. Events refresh the one domain they name within a
moment; the full read catches what events missed (changes while the watcher was down, a
host daemon that restarted). A host that stops answering is retried every pass, and
picked up again when it comes back, without restarting the watcher.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
import uuid as uuidlib

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from domains import hypervisor, inventory
from domains.hypervisor import HypervisorError
from domains.models import Host
from domains.runner import recover_orphaned_operations

log = logging.getLogger("domains.watcher")

# How often the watcher looks for operations orphaned by a dead worker.
RECOVERY_SECONDS = 15


class Watcher:
    def __init__(self, reconcile_seconds: float, pass_seconds: float = 0.5):
        self.reconcile_seconds = reconcile_seconds
        self.pass_seconds = pass_seconds
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.watched: dict[int, str] = {}  # host pk → URI with a live registration
        self.last_full: dict[int, float] = {}
        self.stopping = False
        self.last_recovery = 0.0

    def on_event(self, uri: str, uuid: str) -> None:
        # Runs in libvirt's event thread: only hand the work over.
        self.events.put((uri, uuid))

    def connect(self, host: Host) -> None:
        """(Re)register for events on `host`, store what it can do and read it in full."""
        hypervisor.forget(host.uri)
        hypervisor.watch_lifecycle(host.uri, self.on_event)
        self.watched[host.pk] = host.uri
        # A new connection may reach another daemon (upgraded, restarted): ask it afresh.
        inventory.store_capabilities(host)
        inventory.reconcile_host(host)
        self.last_full[host.pk] = time.monotonic()
        log.info("watching host %s (%s)", host.name, host.uri)

    def check_hosts(self) -> None:
        hosts = list(Host.objects.filter(enabled=True))
        for host_pk in set(self.watched) - {h.pk for h in hosts}:
            self.watched.pop(host_pk, None)  # disabled or deleted
        for host in hosts:
            try:
                fresh = self.watched.get(host.pk) == host.uri and hypervisor.is_alive(host.uri)
                if not fresh:
                    self.connect(host)
                elif time.monotonic() - self.last_full.get(host.pk, 0) >= (self.reconcile_seconds):
                    inventory.reconcile_host(host)
                    self.last_full[host.pk] = time.monotonic()
            except HypervisorError as exc:
                if self.watched.pop(host.pk, None) is not None:
                    log.warning("host %s does not answer: %s", host.name, exc.message)
                Host.objects.filter(pk=host.pk).update(last_error=exc.message)

    def drain_events(self, wait: float) -> None:
        """Refresh the domains named by events that arrive within `wait` seconds."""
        deadline = time.monotonic() + wait
        pending: set[tuple[str, str]] = set()
        while True:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                pending.add(self.events.get(timeout=timeout))
            except queue.Empty:
                break
            # Gather a burst of events before touching the database.
            while True:
                try:
                    pending.add(self.events.get_nowait())
                except queue.Empty:
                    break
            self.refresh(pending)
            pending.clear()

    def refresh(self, pending: set[tuple[str, str]]) -> None:
        hosts = {h.uri: h for h in Host.objects.filter(enabled=True)}
        for uri, uuid in pending:
            host = hosts.get(uri)
            if host is None:
                continue
            try:
                inventory.refresh_domain(host, uuidlib.UUID(uuid))
            except HypervisorError as exc:
                log.warning("refresh of %s on %s failed: %s", uuid, host.name, exc)

    def recover_orphans(self) -> None:
        """Now and then, mark failed what dead workers left running."""
        if time.monotonic() - self.last_recovery < RECOVERY_SECONDS:
            return
        self.last_recovery = time.monotonic()
        recover_orphaned_operations()

    def run(self, once: bool = False) -> None:
        hypervisor.start_event_loop()
        while not self.stopping:
            try:
                close_old_connections()
                self.check_hosts()
                self.recover_orphans()
                if once:
                    return
                self.drain_events(self.pass_seconds)
            except Exception:
                # The watcher keeps the test-driver worlds alive and the inventory
                # fresh: a database hiccup must not end it. Log, pause, go on.
                if once:
                    raise
                log.exception("watcher pass failed; going on")
                time.sleep(1)


class Command(BaseCommand):
    help = "Keep the domain inventory in step with libvirt on every enabled host."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="read every host once and exit")
        parser.add_argument(
            "--reconcile-seconds",
            type=float,
            default=settings.VMPANEL_RECONCILE_SECONDS,
            help="how often to re-read each host in full",
        )

    def handle(self, *args, **options):
        watcher = Watcher(options["reconcile_seconds"])

        def stop(_signum, _frame):
            watcher.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        watcher.run(once=options["once"])
