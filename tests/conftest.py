"""Shared fixtures: private libvirt hosts, Redis, a real Celery worker, named people.

Nothing here mocks libvirt. Two private `libvirtd` daemons host libvirt's test driver
("alpha" and "beta"), started by the same scripts the demo uses; a private Redis carries
the Celery queue and the per-domain locks; a real prefork worker process runs the tasks
against the very test database the tests write to.

Everything lives in a run folder of its own (`/tmp/vmpanel-test-<sha1 of the checkout>`),
so a test run never touches the demo's daemons, Redis or database.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import libvirt
import pytest
import redis
from django.conf import settings

from tests.helpers import PASSWORD, client_for, wait_for

REPO = Path(__file__).resolve().parent.parent
_TAG = hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
RUN_DIR = Path(os.environ.get("VMPANEL_TEST_RUN_DIR") or f"/tmp/vmpanel-test-{_TAG}")
HOST_NAMES = ("alpha", "beta")


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port the kernel hands out."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As Redis does: a port whose last connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port")


# --- environment ---------------------------------------------------------------------
# pytest-django configures Django before it imports this file, so the settings already
# hold the demo's values: the few that matter are set here directly, and the environment
# carries them to the scripts and to every subprocess (worker, watcher), which read
# settings fresh.

RUN_DIR.mkdir(mode=0o755, exist_ok=True)
# The preferred port follows the run folder: runs of one checkout side by side (each with
# its own VMPANEL_TEST_RUN_DIR) would otherwise race for the same port.
_RUN_TAG = hashlib.sha1(str(RUN_DIR).encode()).hexdigest()[:8]
REDIS_PORT = _free_port(16400 + int(_RUN_TAG, 16) % 1000)
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["VMPANEL_RUN_DIR"] = str(RUN_DIR)
os.environ["VMPANEL_REDIS_PORT"] = str(REDIS_PORT)
os.environ["REDIS_URL"] = REDIS_URL
settings.REDIS_URL = REDIS_URL
settings.CELERY_BROKER_URL = REDIS_URL
# Named people are made in nearly every test: the default hasher costs ~0.3 s a user.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_db = settings.DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The default test database is in memory, which the worker could not see: use a file.
    TEST_DB_NAME = str(RUN_DIR / "test.sqlite3")
    _db.setdefault("TEST", {})["NAME"] = TEST_DB_NAME
    TEST_DATABASE_URL = f"sqlite:///{TEST_DB_NAME}"
else:
    # PostgreSQL (CI): pytest-django creates test_<name>; the worker gets the same URL
    # with that database name.
    TEST_DB_NAME = (_db.get("TEST") or {}).get("NAME") or f"test_{_db['NAME']}"
    _parts = urlsplit(os.environ["DATABASE_URL"])
    TEST_DATABASE_URL = urlunsplit(_parts._replace(path=f"/{TEST_DB_NAME}"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a panel process (worker, watcher) that must see the test world."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="vmpanel.settings",
        DATABASE_URL=TEST_DATABASE_URL,
        REDIS_URL=REDIS_URL,
        VMPANEL_RUN_DIR=str(RUN_DIR),
        VMPANEL_REDIS_PORT=str(REDIS_PORT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_script(script: str, *args: str, timeout: float = 60) -> str:
    """Run scripts/<script> with the test run folder; its stdout, or a failure with output."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/{script} {' '.join(args)} failed with status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout.strip()


def _require(binary: str, package: str) -> None:
    if shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ["PATH"]) is None:
        pytest.skip(f"{binary} is not installed (apt-get install {package}): integration tests")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_leftover(pid_file: Path) -> None:
    """Kill what a killed earlier run started and recorded in `pid_file`, if still there.

    Only a process whose environment names this run folder counts: a recycled pid
    belongs to someone else and is left alone.
    """
    try:
        pid = int(pid_file.read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError):
        environ = []
    if f"VMPANEL_RUN_DIR={RUN_DIR}".encode() in environ:
        try:
            os.killpg(pid, signal.SIGKILL)  # it leads its own group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
    pid_file.unlink(missing_ok=True)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM a process we started (in its own session), then SIGKILL its group if needed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        # Leftover children (a prefork pool) share the group we made with start_new_session.
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Before the test database is made again: a worker or watcher of a killed run would
    # write into it (and keep PostgreSQL from dropping it).
    for pid_file in [RUN_DIR / "worker.pid", *RUN_DIR.glob("watcher-*.pid")]:
        stop_leftover(pid_file)


@pytest.fixture(autouse=True)
def _default_language():
    """Every test starts and ends in the default language. A page read in Chinese leaves
    Chinese active in the test's thread (LocaleMiddleware activates it, nothing in the test
    client deactivates it), and a later test matching English words then failed or not by
    the order the tests ran in."""
    from django.utils import translation

    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.activate(settings.LANGUAGE_CODE)


@pytest.fixture(autouse=True)
def _redis_answered_lately():
    """Every test starts with the pages' liveness reads asking Redis afresh: after one went
    unanswered they skip it for a few seconds (`liveness.QUIET_SECONDS`), and a test that
    ran before the session's Redis was up left the next tests without their banners."""
    from domains import liveness

    liveness._quiet_until = 0.0


# --- libvirt hosts -------------------------------------------------------------------

# libvirt prints every error to stderr by default; the tests read them from exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtHosts:
    """The private test-driver daemons and one open connection to each.

    The test driver resets its world when its last client disconnects, so the connection
    kept here lives as long as the daemon. Tests use it as their own view of libvirt,
    separate from the application's connections in `domains.hypervisor`.
    """

    def __init__(self) -> None:
        self.uris: dict[str, str] = {}
        self._conns: dict[str, libvirt.virConnect] = {}

    def uri(self, name: str) -> str:
        return self.uris[name]

    def conn(self, name: str) -> libvirt.virConnect:
        conn = self._conns[name]
        try:
            conn.getHostname()
        except libvirt.libvirtError:
            # The daemon went away under a test: a fresh connection to whatever runs now.
            self._close(name)
            conn = self._conns[name] = libvirt.open(self.uris[name])
        return conn

    def start(self, name: str) -> None:
        run_script("testhost.sh", "start", name)
        self.uris[name] = run_script("testhost.sh", "uri", name)
        self._conns[name] = libvirt.open(self.uris[name])

    def stop(self, name: str) -> None:
        self._close(name)
        run_script("testhost.sh", "stop", name)

    def restart(self, name: str) -> None:
        """Stop and start the daemon: it comes back with a fresh world (only "test")."""
        self.stop(name)
        self.start(name)

    def _close(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


@pytest.fixture(scope="session")
def libvirt_hosts():
    _require("libvirtd", "libvirt-daemon-system")
    hosts = LibvirtHosts()
    try:
        for name in HOST_NAMES:
            # A daemon left by a killed run holds an old world: start from a fresh one.
            run_script("testhost.sh", "stop", name)
            hosts.start(name)
        yield hosts
    finally:
        from domains import hypervisor

        hypervisor.forget_all()
        for name in HOST_NAMES:
            hosts.stop(name)


# --- Redis and the Celery worker -----------------------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    _require("redis-server", "redis-server")
    run_script("redis.sh", "stop")  # one left by a killed run, perhaps on another port
    run_script("redis.sh", "start")
    # It keeps an append-only file: a killed run's messages must not reach this run.
    redis.Redis.from_url(REDIS_URL).flushall()
    try:
        yield REDIS_URL
    finally:
        run_script("redis.sh", "stop")


@pytest.fixture(scope="session")
def celery_worker(redis_server, libvirt_hosts, django_db_setup):
    """A real prefork worker on the test database; tests using it need transaction=True.

    Rows a test commits are what the worker reads, and `transaction.on_commit` (which
    queues the task) only fires outside pytest-django's per-test transaction.
    """
    from vmpanel.celery import app

    assert app.conf.broker_url == REDIS_URL, "the Celery app must use the test Redis"
    pid_file = RUN_DIR / "worker.pid"
    log_path = RUN_DIR / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "vmpanel",
                "worker",
                "--loglevel=INFO",
                "--concurrency=2",
                "--pool=prefork",
                # Alone on a private Redis: no peers to sync with at start.
                "--without-mingle",
                "--without-gossip",
                "--hostname",
                f"vmpanel-test-{_TAG}@%h",
            ],
            cwd=REPO,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the Celery worker exited:\n{_log_tail(log_path)}")
            return bool(app.control.ping(timeout=0.3))

        try:
            wait_for(answers, timeout=30, interval=0.1, what="the Celery worker answers ping")
        except AssertionError:
            raise RuntimeError(
                f"the Celery worker did not answer:\n{_log_tail(log_path)}"
            ) from None
        yield proc
    finally:
        stop_process(proc)
        pid_file.unlink(missing_ok=True)


@pytest.fixture
def start_worker(redis_server, libvirt_hosts, django_db_setup):
    """`start_worker(queue)`: a further worker process that reads only `queue` (as one on a
    machine near a pinned host, or one being restarted); each is stopped after the test.
    Returns (process, log path)."""
    from vmpanel.celery import app

    procs: list[subprocess.Popen] = []

    def start(queue: str, concurrency: int = 1) -> tuple[subprocess.Popen, Path]:
        log_path = RUN_DIR / f"worker-{queue}-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "celery"), "-A", "vmpanel", "worker",
                    "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork",
                    "--without-mingle", "--without-gossip", "-Q", queue,
                    "--hostname", f"{queue}-{len(procs)}@%h",
                ],
                cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        procs.append(proc)
        name = f"{queue}-{len(procs) - 1}@"

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{_log_tail(log_path)}")
            replies = app.control.ping(timeout=0.3) or []
            return any(name in worker for reply in replies for worker in reply)

        wait_for(answers, timeout=30, interval=0.1, what=f"the worker of {queue} answers")
        return proc, log_path

    yield start
    for proc in procs:
        stop_process(proc)


@contextmanager
def broker_at(url: str):
    """This process's Celery app sends its messages to `url` for the block (a real broker
    address, answering or not: no fake), then where it did before."""
    from vmpanel.celery import app

    def point(to: str) -> None:
        app.conf.broker_url = to
        app._pool = None  # connections to the old address are not reused
        app.amqp._producer_pool = None

    saved = app.conf.broker_url
    point(url)
    try:
        yield url
    finally:
        point(saved)


@pytest.fixture
def broker_down():
    """The task queue does not answer: a closed port, where kombu fails to connect as it
    would to a Redis that is down."""
    with broker_at("redis://127.0.0.1:1/0"):
        yield


@pytest.fixture
def watcher_beat(redis_server):
    """A fresh watcher pass on record, as a running watcher leaves it."""
    from domains import liveness

    liveness.mark_watcher_beat()


# --- the inventory watcher (a real `manage.py watch_inventory` process) --------------


@pytest.fixture
def start_watcher(transactional_db, redis_server, hosts, make_domain):
    """Start `manage.py watch_inventory` on the test database; stopped after the test.

    It depends on `make_domain` so that it stops before the test's domains are removed,
    and on Redis, where it takes the hosts' leases.
    Returns a function taking the reconcile interval in seconds, and environment
    variables for the process (several watchers may run: `VMPANEL_LEASE_SECONDS`).
    """
    from domains.models import Host

    procs: list[subprocess.Popen] = []

    def start(reconcile_seconds: float = 60, **env: str) -> subprocess.Popen:
        log_path = RUN_DIR / f"watcher-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "watch_inventory",
                    "--reconcile-seconds",
                    str(reconcile_seconds),
                ],
                cwd=REPO,
                env=subprocess_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        (RUN_DIR / f"watcher-{proc.pid}.pid").write_text(str(proc.pid))

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the watcher exited:\n{_log_tail(log_path)}")
            # Its first pass reads every host in full and stamps it.
            return not Host.objects.filter(enabled=True, last_seen_at__isnull=True).exists()

        wait_for(ready, timeout=20, what="the watcher read every host")
        return proc

    yield start
    for proc in procs:
        stop_process(proc)
        (RUN_DIR / f"watcher-{proc.pid}.pid").unlink(missing_ok=True)


# --- people --------------------------------------------------------------------------


@pytest.fixture
def people(db) -> SimpleNamespace:
    """Named people, as in healthchecks' hc/test.py. Password "password" for all.

    root: superuser, no team. Team A: alice_admin (admin), olga_operator (operator),
    victor_viewer (viewer). Team B: bob_b (operator). nora_noteam: no team at all.
    """
    from django.contrib.auth import get_user_model

    from domains.models import Membership, Role, Team

    User = get_user_model()

    def user(username: str, team=None, role: str | None = None):
        u = User.objects.create_user(username, f"{username}@example.org", PASSWORD)
        if team is not None:
            Membership.objects.create(user=u, team=team, role=role)
        return u

    team_a = Team.objects.create(name="Team A", slug="team-a")
    team_b = Team.objects.create(name="Team B", slug="team-b")
    return SimpleNamespace(
        root=User.objects.create_superuser("root", "root@example.org", PASSWORD),
        team_a=team_a,
        team_b=team_b,
        alice_admin=user("alice_admin", team_a, Role.ADMIN),
        olga_operator=user("olga_operator", team_a, Role.OPERATOR),
        victor_viewer=user("victor_viewer", team_a, Role.VIEWER),
        bob_b=user("bob_b", team_b, Role.OPERATOR),
        nora_noteam=user("nora_noteam"),
    )


@pytest.fixture
def logged_in():
    """`logged_in(user)`: a test Client signed in as `user` (for the HTTP tests)."""
    return client_for


# --- hosts and domains ---------------------------------------------------------------


@pytest.fixture
def hosts(db, libvirt_hosts) -> SimpleNamespace:
    """Host rows "alpha" and "beta" with the URIs of the running test daemons."""
    from domains.models import DEFAULT_ALLOWED_PATHS, Host

    # The test templates' ISOs and kernels live under /srv: a superuser allowed it.
    allowed = f"{DEFAULT_ALLOWED_PATHS}\n/srv"
    return SimpleNamespace(
        **{
            name: Host.objects.create(name=name, uri=libvirt_hosts.uri(name), allowed_paths=allowed)
            for name in HOST_NAMES
        }
    )


class DomainFactory:
    """Defines test domains through libvirt and removes them after the test.

    `define(...)` touches libvirt only and returns the UUID; calling the factory also
    reconciles the host and returns the inventory row, assigned to a team.
    """

    def __init__(self, libvirt_hosts: LibvirtHosts, hosts: SimpleNamespace, people) -> None:
        self.libvirt_hosts = libvirt_hosts
        self.hosts = hosts
        self.people = people
        self.made: list[tuple[str, str]] = []

    def xml(
        self, name: str, uuid: str, vcpus: int = 1, memory_mib: int = 256, devices: bool = False
    ) -> str:
        from domains.domxml import SimpleDomain, build_simple_domain, generate_mac

        return build_simple_domain(
            SimpleDomain(
                name=name, uuid=uuid, vcpus=vcpus, memory_mib=memory_mib,
                disk=f"/guest/{name}.img" if devices else "",
                mac=generate_mac() if devices else "",
            )
        )  # fmt: skip

    def define(
        self,
        host: str = "alpha",
        *,
        name: str | None = None,
        state: str = "shutoff",
        persistent: bool = True,
        autostart: bool = False,
        managed_save: bool = False,
        snapshots: int = 0,
        vcpus: int = 1,
        memory_mib: int = 256,
        devices: bool = False,
    ) -> str:
        """Make a domain in libvirt: state "shutoff", "running" or "paused"; with a disk
        and a network interface if `devices`."""
        from domains.domxml import build_snapshot

        assert state in ("shutoff", "running", "paused"), state
        uuid = str(uuidlib.uuid4())
        name = name or f"vm-{uuid[:8]}"
        conn = self.libvirt_hosts.conn(host)
        xml = self.xml(name, uuid, vcpus, memory_mib, devices)
        self.made.append((host, uuid))
        if persistent:
            dom = conn.defineXML(xml)
            if autostart:
                dom.setAutostart(1)
            if state != "shutoff" or managed_save:
                dom.create()
        else:
            assert state != "shutoff" and not (autostart or managed_save), "transient runs"
            dom = conn.createXML(xml, 0)
        if state == "paused":
            dom.suspend()
        if managed_save:
            dom.managedSave(0)  # leaves it shut off with an image
        for i in range(snapshots):
            dom.snapshotCreateXML(build_snapshot(f"snap{i}"), 0)
        return uuid

    def track(self, host: str, uuid: str) -> None:
        """Remove this domain after the test too (made by the test itself)."""
        self.made.append((host, str(uuid)))

    def __call__(self, host: str = "alpha", *, team: str | None = "a", **kwargs):
        from domains import inventory
        from domains.models import Domain

        uuid = self.define(host, **kwargs)
        host_row = getattr(self.hosts, host)
        inventory.reconcile_host(host_row)
        row = Domain.objects.get(host=host_row, uuid=uuid)
        row.team = {"a": self.people.team_a, "b": self.people.team_b, None: None}[team]
        row.save(update_fields=["team"])
        return row

    def cleanup(self) -> None:
        for host, uuid in reversed(self.made):
            conn = self.libvirt_hosts.conn(host)
            try:
                dom = conn.lookupByUUIDString(uuid)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(
                        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    )
            except libvirt.libvirtError as exc:
                # Undefined by the test, or its host restarted with a fresh world.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise


@pytest.fixture
def make_domain(libvirt_hosts, hosts, people):
    factory = DomainFactory(libvirt_hosts, hosts, people)
    yield factory
    factory.cleanup()


@pytest.fixture
def save_dir(hosts):
    """alpha's save folder (the daemon, as nobody, writes there); images removed after."""
    path = RUN_DIR / "hosts" / "alpha" / "save"
    hosts.alpha.save_dir = str(path)
    hosts.alpha.save(update_fields=["save_dir"])
    yield path
    for image in path.glob("*.save"):
        image.unlink(missing_ok=True)


# --- the console proxy ---------------------------------------------------------------


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def console_proxy(redis_server, django_db_setup):
    """The real console proxy process on the test database and Redis, re-checking open
    consoles every second; yields its WebSocket URL."""
    port = _any_free_port()
    log_path = RUN_DIR / "consoleproxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "consoleproxy", "--port", str(port)],
            cwd=REPO,
            env=subprocess_env(VMPANEL_CONSOLE_RECHECK_SECONDS="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = log_path.read_text()
                    raise RuntimeError(f"console proxy did not start:\n{log_text}") from None
                time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}/console/ws/"
    finally:
        stop_process(proc)


# --- browsers (pytest-playwright) ----------------------------------------------------

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
# from a thread with a loop unless told that this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }
