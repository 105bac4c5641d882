"""The database drops the connections of a long-running process, as an administrator, a
failover or an outside prober would (PostgreSQL's `pg_terminate_backend`): the watcher, a
worker, the web processes and the console proxy each go on by themselves.

Only the connections of the process under test are killed: those whose client port is a
socket that process (or a child of it: the worker's pool) holds, found in /proc. The
test's own connection is kept. Each kill is checked to have found at least one connection,
so that a test never passes because the fault missed.

The processes are run with PostgreSQL's default of a fresh connection per unit of work
(`DATABASE_CONN_MAX_AGE=0`) and with connections kept between requests
(`DATABASE_CONN_MAX_AGE=60`, docs/deploy.md), where a dropped connection sits idle until
its next use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from domains.models import Domain, Host, State
from tests.conftest import REPO, RUN_DIR, _free_port, _log_tail, stop_process, subprocess_env
from tests.helpers import client_for, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
    # Checked before any fixture starts a host or a worker for nothing.
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="database faults are injected with PostgreSQL's pg_terminate_backend: this "
        f"run's database is {connection.vendor} (set DATABASE_URL to a PostgreSQL one)",
    ),
]

KEPT = "60"  # DATABASE_CONN_MAX_AGE of the processes that keep their connections
CONN_AGES = pytest.mark.parametrize(
    "conn_max_age", ["0", KEPT], ids=["fresh-connections", "kept-connections"]
)


# --- which connections belong to a process ---------------------------------------------


def _process_group(leader: int) -> list[int]:
    """The processes of `leader`'s group (the fixtures start each in a session of its own,
    so a worker's pool children are in it too)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == leader:
            pids.append(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _client_ports(leader: int) -> list[int]:
    """Local ports of the TCP connections to PostgreSQL held by `leader`'s group."""
    inodes = set()
    for pid in _process_group(leader):
        inodes |= _socket_inodes(pid)
    server_port = int(connection.settings_dict.get("PORT") or 5432)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def backends_of(proc: subprocess.Popen) -> list[int]:
    """The server processes of the test database serving `proc`'s connections."""
    ports = _client_ports(proc.pid)
    if not ports:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND client_port = ANY(%s)",
            [ports],
        )
        return [row[0] for row in cursor.fetchall()]


def kill_connections(proc: subprocess.Popen) -> int:
    """Terminate every database connection `proc` holds now; how many there were.

    Each is waited for (up to 5 s) until its server process has ended."""
    backends = backends_of(proc)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM unnest(%s::int[]) AS b(pid) "
            "WHERE pg_terminate_backend(b.pid, 5000)",
            [backends],
        )
        return cursor.fetchone()[0]


def killed_some(proc: subprocess.Popen, at_least: int = 1, timeout: float = 10) -> int:
    """Kill `proc`'s connections once it holds at least `at_least`; how many were killed."""
    wait_for(
        lambda: len(backends_of(proc)) >= at_least,
        timeout=timeout,
        interval=0.05,
        what=f"the process holds {at_least} database connection(s) to kill",
    )
    killed = kill_connections(proc)
    assert killed >= at_least, killed
    return killed


# --- a: the inventory watcher ---------------------------------------------------------

WITHIN = 5  # seconds, from a change in libvirt to the inventory, after a kill


def _appears(host: Host, uuid: str, state: str, what: str) -> Domain:
    return wait_for(
        lambda: Domain.objects.filter(host=host, uuid=uuid, state=state).first(),
        timeout=WITHIN,
        what=what,
    )


@CONN_AGES
def test_the_watcher_goes_on_after_its_database_connections_are_killed(
    start_watcher, make_domain, hosts, conn_max_age
):
    # No full read during the test: only the watcher's event handling can explain a change
    # that shows.
    watcher = start_watcher(reconcile_seconds=600, DATABASE_CONN_MAX_AGE=conn_max_age)
    running = {name: make_domain.define(name, state="running") for name in ("alpha", "beta")}
    for name, uuid in running.items():
        _appears(getattr(hosts, name), uuid, State.RUNNING, f"a VM started on {name}")
    # Kept connections: the pass's and each host's watch (a collector's too, by now).
    killed_some(watcher, at_least=3 if conn_max_age == KEPT else 1)

    for name, uuid in running.items():
        # One change, one event (a VM defined and started would send two: the second
        # could hide the first one's loss).
        make_domain.libvirt_hosts.conn(name).lookupByUUIDString(uuid).suspend()
        _appears(getattr(hosts, name), uuid, State.PAUSED, f"a VM paused on {name}")
    uuid = make_domain.define("alpha", state="running")
    _appears(hosts.alpha, uuid, State.RUNNING, "a VM started on alpha")
    assert watcher.poll() is None, "the watcher exited"


@CONN_AGES
def test_the_watcher_loses_no_change_made_while_its_connections_are_killed_again_and_again(
    start_watcher, make_domain, hosts, libvirt_hosts, conn_max_age
):
    """Killed every 50 ms for 3 s, while VMs are started and stopped behind its back:
    kills meet its queries in flight, half-way through an event's refresh."""
    watcher = start_watcher(reconcile_seconds=600, DATABASE_CONN_MAX_AGE=conn_max_age)
    conn = libvirt_hosts.conn("alpha")
    uuids = [make_domain.define("alpha", state="shutoff") for _ in range(6)]
    for uuid in uuids:
        _appears(hosts.alpha, uuid, State.SHUTOFF, "a VM defined before the kills")
    killed = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        # One change at a time, so that an event is handled while the next kill comes.
        for uuid in uuids:
            dom = conn.lookupByUUIDString(uuid)
            dom.destroy() if dom.isActive() else dom.create()
            killed += kill_connections(watcher)
            time.sleep(0.05)
    assert killed > 0

    for uuid in uuids:
        running = bool(conn.lookupByUUIDString(uuid).isActive())
        _appears(
            hosts.alpha,
            uuid,
            State.RUNNING if running else State.SHUTOFF,
            f"the last change of {uuid} after the kills",
        )
    assert watcher.poll() is None, "the watcher exited"


# --- b: a Celery worker ---------------------------------------------------------------


@pytest.fixture
def domain_held(redis_server):
    """`domain_held(domain)`: the VM's lock, taken as another operation would hold it, so
    that the next operation on it is claimed (running) and then waits for the lock;
    released at `.release()` or after the test."""
    from domains import runner

    locks = []

    def hold(domain):
        lock = runner._redis().lock(
            runner.lock_key(domain.host_id, domain.uuid), timeout=30, blocking_timeout=1
        )
        assert lock.acquire()
        locks.append(lock)
        return lock

    yield hold
    for lock in locks:
        if lock.owned():
            lock.release()


def test_an_operation_running_when_the_workers_connections_are_killed_ends_truthfully(
    people, make_domain, libvirt_hosts, celery_worker, domain_held
):
    """The kill meets the operation after its claim (it waits for the VM's lock): libvirt
    starts the VM afterwards, and the record says so; operations asked for after the kill
    run too."""
    from domains.models import Operation, OperationStatus
    from tests.helpers import button_service, live, wait_finished

    domain, *others = [make_domain(state="shutoff") for _ in range(3)]
    lock = domain_held(domain)
    op = button_service("start")(people.olga_operator, domain)
    wait_for(
        lambda: Operation.objects.get(pk=op.pk).status == OperationStatus.RUNNING,
        timeout=10,
        what="the operation claimed by the worker",
    )
    started = time.monotonic()
    killed_some(celery_worker)
    lock.release()

    done = wait_finished(op, timeout=15)
    assert done.status == OperationStatus.SUCCEEDED, (done.status, done.message, done.error)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == 1  # VIR_DOMAIN_RUNNING
    assert Domain.objects.get(pk=domain.pk).state == State.RUNNING
    print(f"settled {time.monotonic() - started:.1f} s after the kill")

    after = [wait_finished(button_service("start")(people.olga_operator, d)) for d in others]
    assert [o.status for o in after] == [OperationStatus.SUCCEEDED] * len(others)


def test_a_long_operation_keeps_beating_after_the_workers_connections_are_killed(
    people, hosts, libvirt_hosts, make_domain, celery_worker
):
    """A direct kernel boot's phase 1 waits for the installer to power off, its heartbeat
    beating meanwhile; the kill meets both. The heartbeat goes on, and the operation ends
    as it would have."""
    from domains.models import Operation, OperationStatus
    from provisioning import services
    from provisioning.models import Method
    from tests.helpers import live, wait_finished
    from tests.test_provisioning_create import make_template

    template = make_template(hosts, Method.KERNEL)
    op = services.create_domain(
        people.root, template, hosts.alpha, people.team_a, "kern-dbfault", 1, 256,
        services.CreateChoice(),
    )  # fmt: skip
    make_domain.track("alpha", op.domain_uuid)
    conn = libvirt_hosts.conn("alpha")

    def beating() -> bool:
        row = Operation.objects.get(pk=op.pk)
        return row.params.get("phase") == "1" and row.heartbeat_at is not None

    wait_for(beating, timeout=10, what="phase 1 running, its heartbeat beating")
    # The operation's own connection and its heartbeat's.
    killed_some(celery_worker, at_least=2)
    killed_at = Operation.objects.get(pk=op.pk).heartbeat_at

    wait_for(
        lambda: Operation.objects.get(pk=op.pk).heartbeat_at > killed_at,
        timeout=3 * settings.VMPANEL_HEARTBEAT_SECONDS,
        what="a heartbeat after the kill",
    )
    assert Operation.objects.get(pk=op.pk).status == OperationStatus.RUNNING
    conn.lookupByUUIDString(str(op.domain_uuid)).destroy()  # the installer powers off
    done = wait_finished(op, timeout=15)
    assert done.status == OperationStatus.SUCCEEDED, (done.status, done.message, done.error)
    facts = live(conn, op.domain_uuid)
    assert facts.persistent and facts.state == 1  # VIR_DOMAIN_RUNNING


# --- c: the web processes -------------------------------------------------------------


@pytest.fixture
def web_process(redis_server, transactional_db, hosts):
    """`start(conn_max_age)`: gunicorn as its unit runs it (tests/test_deploy.py), with one
    process of one thread, so that each request meets the connection the one before left;
    returns (process, base URL)."""
    procs: list[subprocess.Popen] = []

    def start(conn_max_age: str) -> tuple[subprocess.Popen, str]:
        port = _free_port(18300)
        log_path = RUN_DIR / f"web-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"), "vmpanel.wsgi",
                    "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
                    "--workers", "1", "--threads", "1", "--access-logfile", "-",
                    "--no-control-socket",
                ],
                cwd=REPO, env=subprocess_env(DATABASE_CONN_MAX_AGE=conn_max_age),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{_log_tail(log_path)}")
            try:
                return _get(f"{base}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout=30, interval=0.1, what="gunicorn answers")
        return proc, base

    yield start
    for proc in procs:
        stop_process(proc)


def _get(url: str, cookie: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _session_cookie(user) -> str:
    client = client_for(user)  # the session is a row in the test database, which gunicorn reads
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_the_next_page_after_the_web_processs_connections_are_killed_is_served(
    web_process, people, make_domain
):
    make_domain(state="running")
    proc, base = web_process(KEPT)
    cookie = _session_cookie(people.olga_operator)
    assert _get(f"{base}/domains/", cookie)[0] == 200

    killed_some(proc)

    status, body = _get(f"{base}/domains/", cookie)
    assert status == 200, body[:300]
    assert _get(f"{base}/domains/", cookie)[0] == 200


@CONN_AGES
def test_a_page_whose_connection_is_killed_midway_says_try_again_and_the_next_is_served(
    web_process, people, conn_max_age
):
    """The kill meets a request waiting for a lock (another transaction holds the
    sessions): that one request says "try again" in words, the next is served."""
    import concurrent.futures

    import psycopg

    proc, base = web_process(conn_max_age)
    cookie = _session_cookie(people.olga_operator)
    assert _get(f"{base}/domains/", cookie)[0] == 200

    other = psycopg.connect(**connection.get_connection_params())
    try:
        other.execute("LOCK TABLE django_session IN ACCESS EXCLUSIVE MODE")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(_get, f"{base}/domains/", cookie)

            def blocked() -> bool:
                ports = _client_ports(proc.pid)
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s) "
                        "AND wait_event_type = 'Lock'",
                        [ports],
                    )
                    return cursor.fetchone()[0] > 0

            wait_for(blocked, timeout=10, what="the request waits for the lock")
            assert kill_connections(proc) >= 1
            status, body = waiting.result(timeout=20)
    finally:
        other.close()

    assert status == 503, body[:300]
    assert "lost its database for a moment" in body and "Try again in a moment" in body
    status, body = _get(f"{base}/domains/", cookie)
    assert status == 200, body[:300]


# --- d: the console proxy -------------------------------------------------------------

ORIGIN = "http://127.0.0.1:8000"
NO_CONSOLE = 4502  # the test driver has no console: past the ticket and the role checks


@pytest.fixture
def kept_console_proxy(redis_server, transactional_db, hosts):
    """The console proxy process keeping its database connections; (process, URL)."""
    port = _free_port(18400)
    log_path = RUN_DIR / "consoleproxy-dbfault.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "consoleproxy", "--port", str(port)],
            cwd=REPO,
            env=subprocess_env(DATABASE_CONN_MAX_AGE=KEPT),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def listening() -> bool:
        import socket

        if proc.poll() is not None:
            raise RuntimeError(f"the console proxy exited:\n{_log_tail(log_path)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(listening, timeout=20, interval=0.1, what="the console proxy listens")
    yield proc, f"ws://127.0.0.1:{port}/console/ws/"
    stop_process(proc)


def test_a_new_console_after_the_proxys_connections_are_killed_opens(
    people, make_domain, libvirt_hosts, kept_console_proxy
):
    from domains.models import AuditEvent
    from tests.test_consoles import _close_code, _console_domain, _ticket

    proc, url = kept_console_proxy
    domain = _console_domain(make_domain, libvirt_hosts)
    client = client_for(people.olga_operator)

    def console() -> tuple[int, str]:
        ticket = _ticket(client, domain).json()["ticket"]
        return _close_code(f"{url}?ticket={ticket}", origin=ORIGIN)

    assert console()[0] == NO_CONSOLE
    killed_some(proc)

    code, reason = console()
    assert code == NO_CONSOLE, (code, reason)
    # Each console opened is on record as closed (before the test database is flushed).
    wait_for(
        lambda: AuditEvent.objects.filter(kind="console.closed").count() == 2,
        timeout=10,
        what="both consoles on record as closed",
    )
