"""The production layout as written (deploy/, docs/deploy.md), tested (issue 14).

The systemd units pass `systemd-analyze verify`; each unit's own command line (read from
the unit, its ${VARIABLES} from deploy/vmpanel.env.example, this checkout for /opt/vmpanel)
starts a process that works: the web answers, the worker answers ping, the watcher takes
the hosts' leases and gives them back when stopped, the console proxy listens. nginx runs
the site (ports and certificate paths changed, nothing else) in front of them: HTTPS, the
static files from disk, the pages from gunicorn with X-Forwarded-Proto, and the console
WebSocket through to the proxy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from domains.leases import Board
from tests.conftest import REPO, RUN_DIR, _free_port, _log_tail, stop_process, subprocess_env
from tests.helpers import wait_for

DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _example_env() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "vmpanel.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _unit_lines(unit: Path) -> dict[str, str]:
    """The [Service] settings of a unit (the last of a repeated key)."""
    section, found = "", {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def _command(unit: str, env: dict[str, str]) -> list[str]:
    """The unit's ExecStart as this checkout runs it: its variables from `env`, instance 1."""
    line = _unit_lines(DEPLOY / "systemd" / unit)["ExecStart"].replace("/opt/vmpanel", str(REPO))
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    line = line.replace("%i", "1").replace("%%", "%")
    return shlex.split(line)


def test_the_units_pass_systemd_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    names = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/vmpanel", str(REPO))
        text = text.replace("/etc/vmpanel/vmpanel.env", str(DEPLOY / "vmpanel.env.example"))
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    assert {n.split("@")[0].removesuffix(".service") for n in names} == {
        "./vmpanel-web",
        "./vmpanel-worker",
        "./vmpanel-watcher",
        "./vmpanel-consoleproxy",
    }
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.fixture
def unit_processes(redis_server, transactional_db, hosts, make_domain):
    """`start(unit, **env)`: the unit's command line, run here; all stopped after."""
    procs: list[subprocess.Popen] = []

    def start(unit: str, **extra: str) -> subprocess.Popen:
        env = {**_example_env(), **subprocess_env(), **extra}
        log_path = RUN_DIR / f"unit-{unit}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                _command(unit, env),
                cwd=_unit_lines(DEPLOY / "systemd" / unit)["WorkingDirectory"].replace(
                    "/opt/vmpanel", str(REPO)
                ),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


def _get(url: str, context=None, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return response.status, dict(response.headers), response.read()


def _answers(url: str, context=None) -> bool:
    try:
        return _get(url, context)[0] == 200
    except OSError:
        return False


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _nginx(tmp_path: Path, http: int, https: int, web: int, console: int) -> subprocess.Popen:
    """deploy/nginx/vmpanel.conf in a private nginx: only ports and paths changed."""
    cert, key = _self_signed(tmp_path)
    site = (DEPLOY / "nginx" / "vmpanel.conf").read_text()
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{web};"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{console};"),
        ("/etc/ssl/vmpanel/fullchain.pem", str(cert)),
        ("/etc/ssl/vmpanel/privkey.pem", str(key)),
        # The checkout's own static folder stands in for collectstatic's output.
        ("/opt/vmpanel/staticfiles/", f"{REPO}/static/"),
        ("shared:vmpanel:10m", "shared:vmpanel-test:1m"),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "temp"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
user root;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/site.conf;
}}
"""
    )
    test = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stderr
    return subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_each_unit_starts_a_working_process_behind_the_nginx_site(
    unit_processes, hosts, redis_server, tmp_path
):
    web_port, console_port = _free_port(18100), _free_port(18101)
    ports = {
        "VMPANEL_WEB_BIND": f"127.0.0.1:{web_port}",
        "VMPANEL_WEB_WORKERS": "2",
        "VMPANEL_CONSOLE_PORT": str(console_port),
        # The example's production values, except what a test machine cannot have.
        "VMPANEL_HTTPS": "true",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": "https://127.0.0.1",
        "SECRET_KEY": "a-test-key-that-is-long-enough-" + "x" * 40,
    }
    web = unit_processes("vmpanel-web.service", **ports)
    worker = unit_processes(
        "vmpanel-worker@.service", VMPANEL_WORKER_QUEUES="celery,unit-test-queue"
    )
    watcher = unit_processes("vmpanel-watcher.service", VMPANEL_LEASE_SECONDS="3")
    console = unit_processes("vmpanel-consoleproxy.service", **ports)

    def up(proc, check) -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited:\n{_log_tail(proc.log_path)}")
        return check()

    from vmpanel.celery import app

    wait_for(lambda: up(web, lambda: _answers(f"http://127.0.0.1:{web_port}/healthz")), 30)
    wait_for(
        lambda: up(
            worker,
            lambda: any(
                name.startswith("worker1@")
                for reply in (app.control.ping(timeout=0.3) or [])
                for name in reply
            ),
        ),
        30,
        what="the unit's worker answers ping",
    )
    board = Board("watcher", redis.Redis.from_url(redis_server))
    host_ids = [hosts.alpha.pk, hosts.beta.pk]
    wait_for(
        lambda: up(watcher, lambda: None not in board.owners(host_ids).values()),
        30,
        what="the unit's watcher holds every host",
    )
    assert all(str(watcher.pid) in owner[0] for owner in board.owners(host_ids).values())

    def listening() -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", console_port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(lambda: up(console, listening), 30, what="the console proxy listens")

    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx): the site is not tried")
    http, https = _free_port(18180), _free_port(18443)
    nginx = _nginx(tmp_path, http, https, web_port, console_port)
    try:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        base = f"https://127.0.0.1:{https}"
        wait_for(lambda: _answers(f"{base}/healthz", insecure), 10, what="nginx answers")

        # Plain HTTP is sent to HTTPS by nginx itself.
        plain = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            plain.open(f"http://127.0.0.1:{http}/domains/", timeout=5)
        assert moved.value.code == 301
        assert moved.value.headers["Location"].startswith("https://127.0.0.1")

        # Static files come from disk, not from gunicorn (which would add its CSP).
        status, headers, body = _get(f"{base}/static/css/vmpanel.css", insecure)
        assert status == 200 and body == (REPO / "static/css/vmpanel.css").read_bytes()
        assert "Content-Security-Policy" not in headers and "Expires" in headers

        # Pages from gunicorn, which sees HTTPS through X-Forwarded-Proto: the session
        # cookie of a sign-in is Secure, and HSTS is sent.
        status, headers, body = _get(f"{base}/login/", insecure)
        assert status == 200 and "Strict-Transport-Security" in headers
        assert "csrftoken=" in headers.get("Set-Cookie", "") and "Secure" in headers["Set-Cookie"]

        # The console path reaches the console proxy: a WebSocket without a ticket is
        # taken up and closed by the proxy with its own code.
        # (In a thread of its own: after a browser test, Playwright's loop runs in this one.)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            code = pool.submit(
                asyncio.run, _console_close_code(f"wss://127.0.0.1:{https}/console/ws/", insecure)
            ).result(timeout=30)
        assert code == 4401
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(nginx.pid, signal.SIGKILL)

    # Stopped as systemd stops it (SIGTERM): the watcher gives its leases back at once.
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(30) == 0
    assert set(board.owners(host_ids).values()) == {None}
    worker.send_signal(signal.SIGTERM)  # warm shutdown
    assert worker.wait(60) == 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


async def _console_close_code(url: str, context: ssl.SSLContext) -> int | None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    origin = url.replace("wss://", "https://").split("/console/")[0]
    async with connect(url, ssl=context, origin=origin, open_timeout=5) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None
