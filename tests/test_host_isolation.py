"""One host that hangs never stalls the panel: the watcher, the pages and the forms for
the other hosts carry on, and the pages of the hanging one answer within their bounds.

Hosts hang here for real, on this machine only: a test host's libvirtd stopped with
SIGSTOP, and a local TCP port that accepts connections and never says a word.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from contextlib import contextmanager

import pytest

from domains.models import Domain, Host
from tests.conftest import RUN_DIR
from tests.helpers import client_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Pages of a hanging host must answer well inside a proxy's usual 30 s request timeout.
PAGE_SECONDS = 8


@contextmanager
def silent_port():
    """A local TCP port whose listener never accepts: the handshake completes (the
    kernel's backlog), then nothing is ever said."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def stopped(pid: int):
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def gamma(libvirt_hosts, hosts):
    """A third test host of its own, free to be stopped without disturbing the others."""
    libvirt_hosts.start("gamma")
    row = hosts.gamma = Host.objects.create(name="gamma", uri=libvirt_hosts.uri("gamma"))
    pid = int((RUN_DIR / "hosts/gamma/run/libvirtd.pid").read_text().strip())
    try:
        yield row, pid
    finally:
        libvirt_hosts.stop("gamma")


def _timed(client, url: str):
    started = time.monotonic()
    response = client.get(url)
    return response, time.monotonic() - started


@pytest.fixture
def short_bounds(settings):
    settings.VMPANEL_LIBVIRT_CONNECT_SECONDS = 2
    settings.VMPANEL_LIBVIRT_CALL_SECONDS = 3


def test_a_stopped_host_stalls_neither_the_watcher_nor_the_pages(
    gamma, libvirt_hosts, make_domain, start_watcher, people, short_bounds
):
    gamma_row, pid = gamma
    on_gamma = make_domain("gamma", state="running")
    on_alpha = make_domain("alpha", state="shutoff")
    start_watcher(reconcile_seconds=1)
    root = client_for(people.root)

    with stopped(pid):
        time.sleep(2)  # the watcher's passes run into the stopped host meanwhile
        # A change on alpha reaches the list within 2 s, as it does with every host well.
        libvirt_hosts.conn("alpha").lookupByUUIDString(str(on_alpha.uuid)).create()
        wait_for(
            lambda: Domain.objects.get(pk=on_alpha.pk).libvirt_id is not None,
            timeout=2,
            what="alpha's change in the inventory while gamma hangs",
        )
        # The pages answer: the list from the database, alpha's live, gamma's with a banner.
        for url in ("/domains/", f"/domains/alpha/{on_alpha.uuid}/", "/hosts/"):
            response, seconds = _timed(root, url)
            assert response.status_code == 200 and seconds < 2, (url, seconds)
        # The list marks the stopped host's rows: their state is as last seen.
        wait_for(
            lambda: "host not answering" in root.get("/domains/").content.decode(),
            timeout=15,
            what="gamma's rows marked in the list",
        )
        for url in (f"/domains/gamma/{on_gamma.uuid}/", "/hosts/gamma/"):
            response, seconds = _timed(root, url)
            assert response.status_code == 200, url
            assert seconds < PAGE_SECONDS, (url, seconds)
            page = response.content.decode()
            banner = re.search(r'class="banner[^"]*"[^>]*>(.*?)</div>', page, re.S)
            assert "did not answer" in page, (url, banner and banner.group(1).strip())


def test_a_host_that_never_answers_is_refused_in_bounded_time(people, hosts, short_bounds):
    with silent_port() as port:
        uri = f"qemu+tcp://127.0.0.1:{port}/system"
        started = time.monotonic()
        response = client_for(people.root).post(
            "/hosts/new/", {"name": "silent", "uri": uri, "enabled": "on"}
        )
        seconds = time.monotonic() - started

    assert response.status_code == 200  # the form again, with the reason
    assert "did not answer within 2 s" in response.content.decode()
    assert seconds < PAGE_SECONDS
    assert not Host.objects.filter(name="silent").exists()


def test_no_libvirt_call_for_a_disabled_host(people, hosts, make_domain, short_bounds):
    domain = make_domain("alpha", state="shutoff")
    with silent_port() as port:
        # The host now points at a port that would hang any call: none may be made.
        Host.objects.filter(pk=hosts.alpha.pk).update(
            uri=f"qemu+tcp://127.0.0.1:{port}/system", enabled=False
        )
        root = client_for(people.root)
        for url in (
            "/hosts/alpha/",
            "/hosts/alpha/edit/",
            f"/domains/alpha/{domain.uuid}/",
            f"/domains/alpha/{domain.uuid}/xml/",
            f"/domains/alpha/{domain.uuid}/resize/",
            f"/domains/alpha/{domain.uuid}/migrate/",
        ):
            response, seconds = _timed(root, url)
            assert response.status_code == 200, url
            assert seconds < 1, (url, seconds)
        response = root.post(f"/domains/alpha/{domain.uuid}/xml/", {"xml": "<domain/>"})
        assert "disabled" in response.content.decode()
    Host.objects.filter(pk=hosts.alpha.pk).update(uri=hosts.alpha.uri, enabled=True)
