"""Settings come from the environment; a bad value stops the process with its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

REPO = Path(__file__).resolve().parent.parent
READ_SETTINGS = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.VMPANEL_RECONCILE_SECONDS, settings.DEBUG)"
)


def clean_env(**env: str) -> dict[str, str]:
    """A clean environment with `env` on top; the demo's key allowed unless `env` says."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "DATABASE_URL", "TMPDIR")
    }
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "vmpanel.settings",
        "VMPANEL_ALLOW_DEMO_SECRET": "true",
        **env,
    }


def load_settings(code: str = READ_SETTINGS, **env: str) -> subprocess.CompletedProcess:
    """Load vmpanel.settings in a fresh interpreter with `env` on top of a clean base."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("VMPANEL_RECONCILE_SECONDS", "abc", "must be a whole number"),
        ("VMPANEL_DOMAIN_LOCK_SECONDS", "1.5", "must be a whole number"),
        ("AXES_FAILURE_LIMIT", "five", "must be a whole number"),
        ("DEBUG", "maybe", "must be true or false"),
    ],
)
def test_bad_value_fails_at_start_naming_the_variable(name, value, says):
    proc = load_settings(**{name: value})

    assert proc.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in proc.stderr
    assert f"{name} {says}, not {value!r}" in proc.stderr


def test_good_values_are_read():
    proc = load_settings(VMPANEL_RECONCILE_SECONDS="7", DEBUG="yes")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "True"]


def test_defaults_need_no_environment_but_the_demo_allowance():
    proc = load_settings()

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10", "False"]


# --- issue 8, item 6: production settings ------------------------------------------------

SECURITY = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, "
    "settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, "
    "settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD, "
    "settings.SECURE_PROXY_SSL_HEADER)"
)
REAL_KEY = "vmpanel-test-9c1f4e2b7a6d5c3e8f0a1b2c4d6e8f0a1b3c5d7e9f2a4b6c8d0e"


def test_the_demo_key_is_refused_unless_the_demo_says_so():
    refused = load_settings(VMPANEL_ALLOW_DEMO_SECRET="")

    assert refused.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured: SECRET_KEY is the demo's" in (
        refused.stderr
    )
    assert "VMPANEL_ALLOW_DEMO_SECRET=true" in refused.stderr
    # Allowed: the demo and the tests, a debugging developer, and of course a real key.
    for env in (
        {"VMPANEL_ALLOW_DEMO_SECRET": "true"},
        {"VMPANEL_ALLOW_DEMO_SECRET": "", "DEBUG": "true"},
        {"VMPANEL_ALLOW_DEMO_SECRET": "", "SECRET_KEY": REAL_KEY},
    ):
        assert load_settings(**env).returncode == 0, env


def test_https_mode_turns_every_transport_setting_on():
    off = load_settings(SECURITY)
    on = load_settings(SECURITY, VMPANEL_HTTPS="true")
    chosen = load_settings(
        SECURITY, VMPANEL_HTTPS="true", SECURE_HSTS_PRELOAD="false",
        SECURE_HSTS_SECONDS="60", SECURE_PROXY_SSL_HEADER="X-Scheme=https",
    )  # fmt: skip

    assert off.stdout.split() == ["False"] * 3 + ["0"] + ["False"] * 2 + ["None"]
    assert on.stdout.strip() == (
        "True True True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    ), on.stderr
    assert chosen.stdout.strip() == "True True True 60 True False ('HTTP_X_SCHEME', 'https')"


def test_a_bad_proxy_header_is_refused():
    proc = load_settings(SECURE_PROXY_SSL_HEADER="https")
    assert proc.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header and its value" in proc.stderr


def test_deploy_check_of_the_production_settings_has_no_warning(tmp_path):
    """`manage.py check --deploy` with what production sets: HTTPS, a real key, no DEBUG."""
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=clean_env(
            VMPANEL_HTTPS="true",
            SECRET_KEY=REAL_KEY,
            DEBUG="false",
            VMPANEL_ALLOW_DEMO_SECRET="",
            ALLOWED_HOSTS="vmpanel.example.org",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues (0 silenced)." in proc.stdout


@pytest.mark.django_db
def test_https_redirect_spares_the_health_probes(settings):
    settings.SECURE_SSL_REDIRECT = True

    assert Client().get(reverse("healthz")).status_code == 200
    response = Client().get(reverse("login"))
    assert response.status_code == 301
    assert response["Location"].startswith("https://")
